"""How a trained network's mean softmax map becomes a label map, compared on the development cohort.

``python -m experiments.dev_decisions --network runs/dev160/nets/seed0.pt --cases 160 --out runs/dev160`` loads a network
that :mod:`experiments.dev_sweep` saved (``--save``), computes its mean prompt probabilities once per held-out
development case, and scores every decision rule on them (Dice per group, and the lesion figures of
:func:`sim.evaluation.lesion_summary`), one JSON line per rule. Like the schedules, a rule is
chosen here and never on a study's test set (docs/design.md, "Measuring label efficiency honestly").

Rules:
- ``argmax``: the class of highest mean probability (what the server and the study do by default).
- ``tumour>t``: foreground where background is not the most likely class, and tumour there wherever its
  probability passes ``t`` (a lower bar than the argmax's for a class that is under 1 % of the ROI's voxels).
- ``…+liver``: keep only the largest connected foreground component (liver and tumour together), dropping
  tumour calls outside the liver.
- ``…+min<n>``: tumour components of fewer than ``n`` voxels become liver (the smallest lesions of the synthetic
  cohort, 5 mm in radius, are about 33 voxels at 2.5 mm).
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
from sim.evaluation import lesion_summary, mean_probabilities, score_predictions
from sim.prepared import LIVER, TUMOUR

Decision = Callable[[np.ndarray], np.ndarray]


def tumour_above(threshold: float) -> Decision:
    """(C, *S) mean probabilities -> (*S) labels: foreground by argmax of background vs the rest, tumour where its
    probability exceeds ``threshold`` inside the foreground."""

    def decide(probs: np.ndarray) -> np.ndarray:
        foreground = probs[0] < probs[1:].sum(axis=0)
        label = np.where(foreground, LIVER, 0).astype(np.int64)
        label[foreground & (probs[TUMOUR] > threshold)] = TUMOUR
        return label

    return decide


def component_sizes(components: np.ndarray) -> np.ndarray:
    """Voxel counts of components 1..N of an ``ndimage.label`` map: (N,)."""
    return np.bincount(components.ravel())[1:]


def in_largest_component(decide: Decision) -> Decision:
    """``decide``, then everything outside the largest connected foreground component set to background."""

    def restricted(probs: np.ndarray) -> np.ndarray:
        label = decide(probs)
        components, count = ndimage.label(label >= LIVER)
        if count > 1:
            largest = 1 + int(np.argmax(component_sizes(components)))
            label[components != largest] = 0
        return label

    return restricted


def without_small_tumours(decide: Decision, min_voxels: int) -> Decision:
    """``decide``, then every connected tumour component of fewer than ``min_voxels`` voxels relabelled liver."""

    def pruned(probs: np.ndarray) -> np.ndarray:
        label = decide(probs)
        components, count = ndimage.label(label == TUMOUR)
        if count:
            small = np.flatnonzero(component_sizes(components) < min_voxels) + 1
            label[np.isin(components, small)] = LIVER
        return label

    return pruned


def decision_rules(thresholds: list[float], min_sizes: list[int]) -> dict[str, Decision]:
    """Every rule of the module docstring, by name."""
    base: dict[str, Decision] = {"argmax": lambda probs: probs.argmax(axis=0)}
    base.update({f"tumour>{t:g}": tumour_above(t) for t in thresholds})
    rules = base | {f"{name}+liver": in_largest_component(rule) for name, rule in base.items()}
    return rules | {f"{name}+min{n}": without_small_tumours(rule, n) for name, rule in base.items() for n in min_sizes}


def compare(
    network: Annotated[Path, typer.Option(help="A network saved by experiments.dev_sweep --save")],
    out: Annotated[Path, typer.Option(help="The development folder it was trained in")] = Path("runs/dev"),
    cases: Annotated[int, typer.Option(help="Development cohort size")] = DEV_CASES,
    thresholds: Annotated[str, typer.Option(help="Comma-separated tumour thresholds")] = "0.2,0.3,0.4",
    min_sizes: Annotated[str, typer.Option(help="Comma-separated smallest tumour components kept (voxels)")] = "10,30",
    profile: Annotated[str, typer.Option(help="Profile whose geometry was tuned")] = "lesion",
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap of the inference")] = 0.25,
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
) -> None:
    """Score every decision rule on the held-out development cases, one JSON line per rule."""
    torch.set_num_threads(threads)
    model, cohort, held_out, dev = saved_network_on_held_out(network, out, cases, profile)
    probabilities = [mean_probabilities(model, cohort, i, overlap) for i in held_out]
    rules = decision_rules([float(t) for t in thresholds.split(",") if t], [int(n) for n in min_sizes.split(",") if n])
    for name, decide in rules.items():
        labels = [decide(p) for p in probabilities]
        summary, _ = score_predictions(cohort, held_out, labels)
        summary |= lesion_summary(cohort, held_out, labels, dev.spacing)  # detection F1, false components, per size
        print(json.dumps({"rule": name, "overlap": overlap, **{k: round(v, 3) for k, v in summary.items()}}), flush=True)


if __name__ == "__main__":
    typer.run(compare)
