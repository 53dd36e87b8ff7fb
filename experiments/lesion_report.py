"""Where a trained network's tumour errors are, on the held-out development cases: Dice per acquisition group, and per
lesion size, detection F1 and false positives on tumour-free cases (:func:`sim.evaluation.lesion_summary`).

``python -m experiments.lesion_report --network runs/dev/nets/seed0.pt --out runs/dev --cases 160`` loads a network
that :mod:`experiments.dev_sweep` saved (``--save``) and prints one JSON line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
import typer

from cohort.msd import load_msd
from experiments.dev_sweep import DEV_CASES, development_split
from models.backbone import load_backbone
from models.checkpoint import load_slpt
from sim.evaluation import lesion_summary, mean_probabilities, score_predictions
from sim.prepared import prepared_cohort
from sim.profiles import DEV_COHORT_SEED, PROFILES


def report(
    network: Annotated[Path, typer.Option(help="A network saved by experiments.dev_sweep --save")],
    out: Annotated[Path, typer.Option(help="The development folder it was trained in")] = Path("runs/dev"),
    cases: Annotated[int, typer.Option(help="Development cohort size")] = DEV_CASES,
    profile: Annotated[str, typer.Option(help="Profile whose geometry was tuned")] = "lesion",
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
) -> None:
    """Print the held-out development figures of one saved network as one JSON line."""
    torch.set_num_threads(threads)
    dev = replace(PROFILES[profile], cases=cases, cohort_seed=DEV_COHORT_SEED)
    cohort, _cache = prepared_cohort(load_msd(out / "cohort"), out / "backbone.pt", out, dev)
    _pool, held_out = development_split(cohort)
    model = load_slpt(network, load_backbone(out / "backbone.pt")[0])
    labels = [mean_probabilities(model, cohort, i).argmax(axis=0) for i in held_out]
    summary, _ = score_predictions(cohort, held_out, labels)
    lesions = lesion_summary(cohort, held_out, labels, dev.spacing)
    print(json.dumps({"network": str(network), **{k: round(v, 3) for k, v in {**summary, **lesions}.items()}}))


if __name__ == "__main__":
    typer.run(report)
