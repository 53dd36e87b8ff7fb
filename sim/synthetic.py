"""The inputs of a ``--synthetic`` run: the generated downstream cohort and a backbone pre-trained on a separate
upstream cohort, made in the run folder (``--out``) by the profile's recipe.

A study makes its backbone once: the run keeps it in its records (:mod:`sim.kept_backbone`), and every later run on
those records, on any machine, uses that file and only generates the downstream cohort (:func:`synthetic_cohort`).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from models.training import progress_bar
from sim.profiles import SimProfile
from storage.atomic import atomic_path


def prepare_synthetic(out: Path, profile: SimProfile) -> tuple[Path, Path]:
    """Make (once) the downstream cohort and the upstream-pretrained backbone of a ``--synthetic`` run.

    The downstream cohort (seed ``profile.cohort_seed``) goes to ``out/cohort``; the backbone is made by the profile's
    recipe (:class:`models.recipes.BackboneRecipe`) into ``out/backbone.pt``, on its upstream cohort in
    ``out/upstream``. Both are reused when present. Pre-training runs on one thread, so the downstream cohort is
    generated on the other core meanwhile. Returns (cohort folder, backbone checkpoint).
    """
    backbone = out / "backbone.pt"
    if backbone.is_file():
        return synthetic_cohort(out, profile), backbone
    with ProcessPoolExecutor(1) as side:
        cohort_made = side.submit(synthetic_cohort, out, profile, progress=False)
        _pretrain_synthetic(out / "upstream", backbone, profile)
        return cohort_made.result(), backbone


def synthetic_cohort(out: Path, profile: SimProfile, progress: bool = True) -> Path:
    """The downstream cohort alone, made once in ``out/cohort`` (a run whose records keep its backbone)."""
    from cohort.synth import generate_cohort

    folder = out / "cohort"
    if not (folder / "dataset.json").is_file():
        with atomic_path(folder) as scratch:
            generate_cohort(scratch, profile.cases, profile.cohort_seed, profile.size, progress=progress)
    return folder


def _pretrain_synthetic(upstream_dir: Path, backbone: Path, profile: SimProfile) -> None:
    """Make the run's backbone by the profile's recipe, on one thread (the other core generates the downstream
    cohort meanwhile)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile.recipe.upstream_cohort(upstream_dir)
        with progress_bar("pre-training the backbone") as report:
            profile.recipe.make(backbone, upstream=upstream_dir, progress=report)
    finally:
        torch.set_num_threads(threads)
