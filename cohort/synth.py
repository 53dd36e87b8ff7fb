"""Synthetic abdominal-CT cohort in MSD layout (docs/design.md, "Synthetic cohort").

Each case is a ``size``³ CT-like volume in Hounsfield units (int16) drawn by :mod:`cohort.phantom`, with
labels 0 background, 1 liver, 2 tumour — or, for the upstream pre-training cohort, 1 liver (never with a
tumour), 2 spleen, 3 kidney, 4 lesion (of the spleen or a kidney, in 90 % of the cases). Files:
``imagesTr/case_0000.nii.gz``, ``labelsTr/case_0000.nii.gz``, ``dataset.json`` (MSD keys plus ``slpt_groups``) and
``groups.csv``.

Randomness: case ``i`` draws only from ``default_rng([seed, case_stream, i])``, so a case is the same
whatever the cohort size. Groups and tumour-free cases are dealt per block of
:data:`~cohort.acquisition.BLOCK_CASES` consecutive cases — exact 8/5/4/3 group counts and 2 tumour-free
cases (10 %) per block, shuffled by ``default_rng([seed, block_stream, block])`` — so even small
cohorts have the intended, unequal mix. The upstream cohort uses other streams than the downstream one,
so the same seed never gives the pre-training network the downstream volumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from cohort.acquisition import BLOCK_CASES, AcquisitionGroup, block_slots
from cohort.msd import CohortError, write_msd_index, write_nifti_gz
from cohort.phantom import render_case

__all__ = ["CohortError", "generate_cohort", "case_plan", "case_rng", "TUMOUR_LABELS", "ORGAN_LABELS"]

MIN_SIZE = 8
TUMOUR_FREE_PER_BLOCK = 2  # 10 % of cases have no tumour
STREAMS = {False: (0, 1), True: (2, 3)}  # upstream → (case stream, block stream)

TUMOUR_LABELS = {0: "background", 1: "liver", 2: "tumour"}
ORGAN_LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney", 4: "lesion"}


def case_plan(seed: int, index: int, upstream: bool = False) -> tuple[AcquisitionGroup, bool]:
    """(acquisition group, has tumour) of case ``index``: its shuffled slot in its block. An upstream case's tumours
    are lesions of the spleen and kidneys, never of the liver."""
    block, slot = divmod(index, BLOCK_CASES)
    rng = np.random.default_rng([seed, STREAMS[upstream][1], block])
    order = rng.permutation(BLOCK_CASES)
    tumour_free = rng.choice(BLOCK_CASES, size=TUMOUR_FREE_PER_BLOCK, replace=False)
    return block_slots()[order[slot]], slot not in tumour_free


def case_rng(seed: int, index: int, upstream: bool = False) -> np.random.Generator:
    """The independent random stream of case ``index``."""
    return np.random.default_rng([seed, STREAMS[upstream][0], index])


def _check_arguments(cases: int, seed: int, size: int) -> None:
    if isinstance(cases, bool) or not isinstance(cases, int) or cases <= 0:
        raise CohortError(f"cases must be a positive integer, got {cases!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise CohortError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CohortError(f"seed must be a non-negative integer, got {seed!r}")


def _prepare_output(out: Path) -> None:
    """Create ``out``/imagesTr and ``out``/labelsTr, or raise CohortError naming ``out``."""
    try:
        if out.exists():
            if not out.is_dir():
                raise CohortError(f"{out} exists and is not a directory")
            if any(out.iterdir()):
                raise CohortError(f"{out} is not empty")
        out.mkdir(parents=True, exist_ok=True)
        (out / "imagesTr").mkdir()
        (out / "labelsTr").mkdir()
    except OSError as exc:
        raise CohortError(f"cannot write the cohort to {out}: {exc.strerror or exc}") from exc


def generate_cohort(
    out: Path, cases: int, seed: int, size: int = 64, upstream: bool = False, progress: bool = True
) -> Path:
    """Write ``cases`` synthetic CT volumes of ``size``³ voxels in MSD layout under ``out``.

    ``upstream=True`` writes the organ-labelled pre-training cohort (:data:`ORGAN_LABELS`: organs and a lesion
    class for lesions of the spleen and kidneys; no liver tumours). Equal arguments give byte-identical files. ``out``
    must be missing or empty; arguments and ``out`` are checked before anything is generated.
    Shows a tqdm bar unless ``progress=False``. Returns the path of ``dataset.json``.
    """
    _check_arguments(cases, seed, size)
    out = Path(out)
    _prepare_output(out)
    names, groups = [], {}
    for index in tqdm(range(cases), desc="synthetic cohort", unit="case", disable=not progress):
        group, has_tumour = case_plan(seed, index, upstream)
        phantom = render_case(
            case_rng(seed, index, upstream), group, size,
            with_tumour=has_tumour and not upstream, organ_lesions=has_tumour and upstream,
        )
        name = f"case_{index:04d}"
        write_nifti_gz(out / "imagesTr" / f"{name}.nii.gz", phantom.image, phantom.grid.affine)
        write_nifti_gz(out / "labelsTr" / f"{name}.nii.gz", phantom.label_map(upstream), phantom.grid.affine)
        names.append(name)
        groups[name] = group.name

    kind = "organs (upstream pre-training)" if upstream else "liver and tumour"
    description = {
        "name": f"SLPT synthetic abdominal CT, {kind}",
        "description": f"Synthetic {size}^3 CT-like volumes in HU with acquisition groups, made by cohort.synth",
        "reference": "cohort.synth (synthetic, no patient data)",
        "licence": "CC0",
        "release": "1.0",
        "slpt_generator": {"seed": seed, "size": size, "cases": cases, "upstream": upstream},
    }
    return write_msd_index(out, names, ORGAN_LABELS if upstream else TUMOUR_LABELS, groups, description)
