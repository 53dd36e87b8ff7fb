"""Where a trained network's tumour errors are, on the held-out development cases: Dice per acquisition group, and per
lesion size, detection F1 and false positives on tumour-free cases (:func:`sim.evaluation.lesion_summary`).

``python -m experiments.lesion_report --network runs/dev/nets/seed0.pt --out runs/dev --cases 160`` loads a network
that :mod:`experiments.dev_sweep` saved (``--save``) and prints one JSON line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer

from experiments.dev_sweep import DEV_CASES, saved_network_on_held_out
from sim.evaluation import lesion_summary, mean_probabilities, score_predictions


def report(
    network: Annotated[Path, typer.Option(help="A network saved by experiments.dev_sweep --save")],
    out: Annotated[Path, typer.Option(help="The development folder it was trained in")] = Path("runs/dev"),
    cases: Annotated[int, typer.Option(help="Development cohort size")] = DEV_CASES,
    profile: Annotated[str, typer.Option(help="Profile whose geometry was tuned")] = "lesion",
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
) -> None:
    """Print the held-out development figures of one saved network as one JSON line."""
    torch.set_num_threads(threads)
    model, cohort, held_out, dev = saved_network_on_held_out(network, out, cases, profile)
    labels = [mean_probabilities(model, cohort, i).argmax(axis=0) for i in held_out]
    summary, _ = score_predictions(cohort, held_out, labels)
    lesions = lesion_summary(cohort, held_out, labels, dev.spacing)
    print(json.dumps({"network": str(network), **{k: round(v, 3) for k, v in {**summary, **lesions}.items()}}))


if __name__ == "__main__":
    typer.run(report)
