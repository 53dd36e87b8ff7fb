"""Tumour post-processing variants of one trained network, on the held-out development cases.

``python -m experiments.postprocess_sweep --network runs/dev/nets/seed0.pt --out runs/dev --cases 160`` computes each
held-out case's mean prompt probabilities once, then scores several ways of turning them into a label map: the plain
argmax; tumour components smaller than a few voxels removed; a tumour probability threshold other than the argmax's;
tumour kept only where it touches the predicted liver. One JSON line per variant (Dice per group, lesion figures:
:func:`sim.evaluation.lesion_summary`). Decisions made here are made on the development cohort, never the study's test
set (docs/results/simulation/dev_sweep.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from scipy import ndimage

from experiments.dev_sweep import DEV_CASES, saved_network_on_held_out
from models.quality import lesion_components
from sim.evaluation import lesion_summary, mean_probabilities, score_predictions
from sim.prepared import LIVER, TUMOUR

Variant = Callable[[np.ndarray], np.ndarray]


def argmax(probabilities: np.ndarray) -> np.ndarray:
    """(C, *roi) -> (*roi) class map."""
    return probabilities.argmax(axis=0)


def without_small_lesions(min_voxels: int) -> Variant:
    """The argmax with tumour components under ``min_voxels`` voxels turned into liver."""

    def variant(probabilities: np.ndarray) -> np.ndarray:
        label = argmax(probabilities)
        components, _ = lesion_components(label == TUMOUR)
        sizes = np.bincount(components.ravel())
        small = (sizes < min_voxels)[components] & (components > 0)
        label[small] = LIVER
        return label

    return variant


def tumour_threshold(threshold: float) -> Variant:
    """Tumour wherever its probability exceeds ``threshold``; elsewhere the argmax of background and liver."""

    def variant(probabilities: np.ndarray) -> np.ndarray:
        label = probabilities[:TUMOUR].argmax(axis=0)
        label[probabilities[TUMOUR] > threshold] = TUMOUR
        return label

    return variant


def tumour_in_liver(probabilities: np.ndarray) -> np.ndarray:
    """The argmax with tumour kept only in the largest connected liver-or-tumour mass."""
    label = argmax(probabilities)
    components, count = ndimage.label(label >= LIVER)
    if count > 1:
        largest = 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
        label[(label == TUMOUR) & (components != largest)] = 0
    return label


VARIANTS: dict[str, Variant] = {
    "argmax": argmax,
    **{f"min_{n}_voxels": without_small_lesions(n) for n in (5, 10, 20, 40)},
    **{f"threshold_{t}": tumour_threshold(t) for t in (0.3, 0.4, 0.6, 0.7)},
    "tumour_in_liver": tumour_in_liver,
}


def sweep(
    network: Annotated[Path, typer.Option(help="A network saved by experiments.dev_sweep --save")],
    out: Annotated[Path, typer.Option(help="The development folder it was trained in")] = Path("runs/dev"),
    cases: Annotated[int, typer.Option(help="Development cohort size")] = DEV_CASES,
    profile: Annotated[str, typer.Option(help="Profile whose geometry was tuned")] = "lesion",
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
) -> None:
    """Print one JSON line per post-processing variant."""
    torch.set_num_threads(threads)
    model, cohort, held_out, dev = saved_network_on_held_out(network, out, cases, profile)
    probabilities = [mean_probabilities(model, cohort, i) for i in held_out]
    for name, variant in VARIANTS.items():
        labels = [variant(p) for p in probabilities]
        summary, _ = score_predictions(cohort, held_out, labels)
        lesions = lesion_summary(cohort, held_out, labels, dev.spacing)
        print(json.dumps({"variant": name, **{k: round(v, 3) for k, v in {**summary, **lesions}.items()}}), flush=True)


if __name__ == "__main__":
    typer.run(sweep)
