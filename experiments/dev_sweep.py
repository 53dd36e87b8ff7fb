"""Schedule tuning on the development cohort: ``python -m experiments.dev_sweep --tuning prompt --steps 200 …``.

The schedules of :mod:`sim.profiles` are fixed here, never on a study's test set (docs/design.md,
"Measuring label efficiency honestly"). The development
cohort is generated from :data:`sim.profiles.DEV_COHORT_SEED`, which no profile draws from; the backbone is the
one the profile's ``--synthetic`` study pre-trains (same upstream cohort and seed, so the sweep tunes the network
the study uses). Each call trains one schedule on ``labels`` random development volumes per seed, with the very
``train_network``/``evaluate`` of the study, and prints one JSON line per seed (tumour Dice per case and global,
liver Dice, training seconds) on the held-out quarter of the development cohort.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from cohort.msd import load_msd
from models.backbone import load_backbone
from models.checkpoint import load_slpt, save_slpt
from models.slpt import SLPTNet
from models.training import progress_bar
from sim.evaluation import evaluate
from sim.network import build_network, train_network
from sim.prepared import PreparedCohort, prepared_cohort, split_pool_test
from sim.profiles import DEV_COHORT_SEED, PROFILES, Schedule, SimProfile
from sim.synthetic import prepare_synthetic

DEV_CASES = 60
DEV_SPLIT_SEED = 11
GLOBAL_KEYS = ("tumour_dice", "tumour_dice_global", "liver_dice")


def development_split(cohort: PreparedCohort) -> tuple[list[int], list[int]]:
    """(volumes to label from, held-out volumes) of the development cohort: a fixed quarter held out."""
    return split_pool_test(cohort, 0.25, DEV_SPLIT_SEED)


def saved_network_on_held_out(
    network: Path, out: Path, cases: int, profile: str
) -> tuple[SLPTNet, PreparedCohort, list[int], SimProfile]:
    """A network :func:`sweep` saved (``--save``), the development cohort it was trained on (in ``out``), its held-out
    cases and the development profile: what every analysis of a saved network starts from."""
    dev = replace(PROFILES[profile], cases=cases, cohort_seed=DEV_COHORT_SEED)
    cohort, _cache = prepared_cohort(load_msd(out / "cohort"), out / "backbone.pt", out, dev)
    _pool, held_out = development_split(cohort)
    return load_slpt(network, load_backbone(out / "backbone.pt")[0]), cohort, held_out, dev


def sweep(
    tuning: Annotated[str, typer.Option(help="prompt or finetune")] = "prompt",
    steps: Annotated[int, typer.Option(help="Training steps")] = 200,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 3e-2,
    lr_decay: Annotated[str, typer.Option(help="constant, or cosine (annealed to 0 over --steps)")] = "constant",
    patch: Annotated[int, typer.Option(help="Training patch / inference window edge")] = 32,
    batch_per_prompt: Annotated[int, typer.Option(help="Patches per prompt per step")] = 2,
    labels: Annotated[int, typer.Option(help="Labeled development volumes (>= pool size: all)")] = 10,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds")] = "0,1",
    profile: Annotated[str, typer.Option(help="Profile whose geometry and backbone are tuned")] = "lesion",
    cases: Annotated[int, typer.Option(help="Development cohort size")] = DEV_CASES,
    threads: Annotated[int, typer.Option(help="Torch threads")] = 1,
    eval_every: Annotated[int, typer.Option(help="Also evaluate every N steps (0: only at the end)")] = 0,
    upstream_cases: Annotated[int, typer.Option(help="Upstream cohort size of a new backbone (0: the profile's)")] = 0,
    pretrain_epochs: Annotated[int, typer.Option(help="Pre-training epochs of a new backbone (0: the profile's)")] = 0,
    denoise: Annotated[float, typer.Option(help="Denoising weight of a new backbone's pre-training (-1: the profile's)")] = -1.0,
    tumour_ratio: Annotated[float, typer.Option(help="Tumour patch centres per liver (or background) centre")] = 1.0,
    fpu_rank: Annotated[int, typer.Option(help="FPU width r")] = 8,
    head_stages: Annotated[str, typer.Option(help="Comma-separated encoder stages the head also reads ('' = none)")] = "",
    head_kernel: Annotated[int, typer.Option(help="Edge of the head's convolution")] = 1,
    head_image: Annotated[bool, typer.Option(help="The head also reads the image at full resolution")] = False,
    out: Annotated[Path, typer.Option(help="Folder of the development cohort and backbone")] = Path("runs/dev"),
    save: Annotated[Path | None, typer.Option(help="Write each seed's trained network to SAVE/seed<N>.pt")] = None,
) -> None:
    """Train one schedule on the development cohort and print its held-out Dice, one JSON line per seed."""
    torch.set_num_threads(threads)
    base = PROFILES[profile]
    recipe = replace(base.recipe, upstream_cases=upstream_cases or base.recipe.upstream_cases,
                     epochs=pretrain_epochs or base.recipe.epochs)
    if denoise >= 0:
        recipe = recipe.with_schedule(denoise_weight=denoise)
    dev = replace(base, cases=cases, cohort_seed=DEV_COHORT_SEED, patch=patch,
                  batch_per_prompt=batch_per_prompt,
                  class_ratios=None if tumour_ratio == 1.0 else (1.0, 1.0, tumour_ratio),
                  fpu_rank=fpu_rank, head_reads_stages=tuple(int(s) for s in head_stages.split(",") if s),
                  head_kernel=head_kernel, head_reads_image=head_image, recipe=recipe)
    cohort_dir, backbone_path = prepare_synthetic(out, dev)
    cohort, _cache = prepared_cohort(load_msd(cohort_dir), backbone_path, out, dev)
    backbone, backbone_config = load_backbone(backbone_path)
    pool, held_out = development_split(cohort)
    for seed in (int(s) for s in seeds.split(",")):
        rng = np.random.default_rng(100 + seed)
        picks = pool if labels >= len(pool) else sorted(rng.choice(pool, labels, replace=False).tolist())
        network = build_network(backbone, tuning, dev, seed)

        def line(done: int, seconds: float) -> str:
            summary, _ = evaluate(network, cohort, held_out)  # leaves the network's train/eval mode as it was
            return json.dumps({
                "tuning": tuning, "steps": done, "lr": lr, "lr_decay": lr_decay, "patch": patch, "batch_per_prompt": batch_per_prompt,
                "labels": len(picks), "seed": seed, "tumour_ratio": tumour_ratio,
                "fpu_rank": fpu_rank, "head_stages": head_stages, "head_kernel": head_kernel, "head_image": head_image,
                "tumour_dice": round(summary["tumour_dice"], 3),
                "tumour_dice_global": round(summary["tumour_dice_global"], 3),
                "liver_dice": round(summary["liver_dice"], 3), "train_s": round(seconds, 1),
                "roi_holds_liver": f"{int(cohort.roi_holds_liver[held_out].sum())}/{len(held_out)}",
                "groups": {k: round(v, 3) for k, v in summary.items() if k not in GLOBAL_KEYS},
            })

        with progress_bar(f"{tuning} seed {seed}") as report:
            start = time.perf_counter()

            def step_done(done: int, total: int, loss: float) -> None:
                report(done, total, loss)
                if eval_every and done % eval_every == 0 and done < total:
                    print(line(done, time.perf_counter() - start), flush=True)

            network, seconds = train_network(
                backbone, [cohort.images[i] for i in picks], [cohort.labels[i] for i in picks], tuning,
                Schedule(steps, lr), dev, seed, progress=step_done, network=network, lr_decay=lr_decay,
            )
        print(line(steps, seconds), flush=True)
        if save:
            save_slpt(network, save / f"seed{seed}.pt", backbone_config, {"steps": steps, "lr": lr, "labels": len(picks)})


if __name__ == "__main__":
    typer.run(sweep)
