"""Pre-training variants of the shipped recipe: ``python -m experiments.pretrain_sweep --out runs/pre/a.pt --lesion-ratio 4``.

Each call pre-trains one backbone from :data:`models.recipes.LESION` with the given changes, on the recipe's upstream
cohort (generated once into ``--upstream``), and prints its metrics as one JSON line (held-out Dice per class at the
working and coarse spacings). The downstream check of a backbone is :mod:`experiments.dev_sweep` with the backbone
copied to its ``--out``/backbone.pt. What was tried and found: docs/results/simulation/dev_sweep.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
import typer

import cohort.phantom
from models.recipes import LESION
from models.training import progress_bar


def pretrain_variant(
    out: Annotated[Path, typer.Option(help="Backbone checkpoint to write")],
    upstream: Annotated[Path, typer.Option(help="Upstream cohort folder (made from the recipe if missing)")] = Path(
        "runs/pre/upstream"
    ),
    epochs: Annotated[int, typer.Option(help="Epochs (0: the recipe's)")] = 0,
    patch: Annotated[int, typer.Option(help="Patch edge (0: the recipe's)")] = 0,
    batch: Annotated[int, typer.Option(help="Patches per step (0: the recipe's)")] = 0,
    lesion_ratio: Annotated[float, typer.Option(help="Lesion patch centres per other-class centre")] = 1.0,
    lesion_weight: Annotated[float, typer.Option(help="Cross-entropy weight of the lesion class")] = 1.0,
    foreground_dice: Annotated[bool, typer.Option(help="Dice over the foreground classes only")] = False,
    upstream_cases: Annotated[int, typer.Option(help="Upstream cases (0: the recipe's)")] = 0,
    denoise: Annotated[float, typer.Option(help="Denoising weight (-1: the recipe's)")] = -1.0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (0: the recipe's)")] = 0.0,
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
    organ_lesion_radius: Annotated[
        str, typer.Option(help="'MIN,MAX' radius (mm) of the upstream organ lesions ('': the generator's)")
    ] = "",
) -> None:
    """Pre-train one variant of the recipe and print its metrics."""
    torch.set_num_threads(threads)
    if organ_lesion_radius:
        # A variant of the generator, drawn into its own --upstream folder: the cohort is made on first use.
        cohort.phantom.ORGAN_LESION_RADIUS_MM = tuple(float(r) for r in organ_lesion_radius.split(","))
    schedule = LESION.schedule
    recipe = LESION.with_schedule(
        patch_size=(patch,) * 3 if patch else schedule.patch_size,
        batch_size=batch or schedule.batch_size,
        denoise_weight=schedule.denoise_weight if denoise < 0 else denoise,
        lr=lr or schedule.lr,
        class_ratios=None if lesion_ratio == 1.0 else (1.0, 1.0, 1.0, 1.0, lesion_ratio),
        class_weights=None if lesion_weight == 1.0 else (1.0, 1.0, 1.0, 1.0, lesion_weight),
        dice_background=not foreground_dice,
    )
    recipe = replace(
        recipe, epochs=epochs or recipe.epochs, upstream_cases=upstream_cases or recipe.upstream_cases
    )
    with progress_bar(f"pre-training {out.stem}") as report:
        metrics = recipe.make(out, upstream=upstream, progress=report)
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    typer.run(pretrain_variant)
