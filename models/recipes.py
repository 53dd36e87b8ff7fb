"""How the project's own backbone is made, and the one it ships.

No pre-trained medical weights can be downloaded here, so the project pre-trains its own backbone on a synthetic
upstream cohort (docs/design.md, "Backbone"). Pre-training takes the better part of an hour on one CPU core, so the
result is kept, not re-made: :data:`LESION` is the recipe, and ``models/weights/`` holds the backbone it made, with its
sha256 here. ``slpt demo`` (and ``slpt serve --pretrain-if-missing``) install that file; ``slpt pretrain`` re-makes one
from the recipe. Two runs of the recipe on different CPUs give backbones that differ in float rounding, which is why
the checksum names the kept file, not the recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from models.backbone import BackboneConfig, config_path
from models.errors import CheckpointError
from models.pretrain import PretrainConfig, pretrain_backbone
from models.training import Progress
from storage.atomic import atomic_copy, atomic_path
from storage.digest import file_sha256


@dataclass(frozen=True)
class BackboneRecipe:
    """Everything that makes a backbone: the upstream cohort (``cohort.synth.generate_cohort(..., upstream=True)``
    with ``upstream_cases``, ``upstream_seed``, ``upstream_size``), the architecture, and the pre-training schedule
    (``epochs`` passes of :func:`models.pretrain.pretrain_backbone` with ``schedule``)."""

    name: str
    backbone: BackboneConfig
    epochs: int
    upstream_cases: int
    upstream_seed: int
    upstream_size: int
    schedule: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples, so that it equals itself read back): what a study records of the recipe
        that made its backbone."""
        return json.loads(json.dumps(asdict(self) | {"backbone": self.backbone.to_dict()}))

    def upstream_cohort(self, folder: Path, progress: bool = True) -> Path:
        """The recipe's synthetic upstream cohort in ``folder``, generated once (into a scratch folder moved into
        place when complete, so an interrupted generation is redone). Returns ``folder``."""
        from cohort.synth import generate_cohort  # the generator is only needed where no cohort is given

        if not (folder / "dataset.json").is_file():
            with atomic_path(folder) as scratch:
                generate_cohort(scratch, self.upstream_cases, self.upstream_seed, self.upstream_size, upstream=True,
                                progress=progress)
        return folder

    def make(
        self, out: Path, data: Path | None = None, upstream: Path | None = None, epochs: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Pre-train a backbone into ``out`` (and its ``.json``): on ``data`` (an MSD-layout upstream cohort) or else
        on the recipe's synthetic one, generated once into ``upstream`` (default: ``<out stem>.upstream`` beside
        ``out``). ``epochs`` overrides the recipe's. Returns the pre-training metrics."""
        if data is None:
            data = self.upstream_cohort(upstream or out.with_name(out.stem + ".upstream"))
        out.parent.mkdir(parents=True, exist_ok=True)
        return pretrain_backbone(data, out, self.backbone, epochs or self.epochs, progress, self.schedule)

    def with_schedule(self, **changes: Any) -> BackboneRecipe:
        """This recipe with some fields of its :class:`~models.pretrain.PretrainConfig` changed."""
        return replace(self, schedule=replace(self.schedule, **changes))


#: A full-resolution, lesion-aware backbone: a DynUNet whose stride-1 first stage gives the head a feature at the
#: working spacing, pre-trained on organs and lesions of the spleen and kidneys (never of the liver) with the
#: denoising term. 3,840 steps of 48³ patches; about 40 minutes on one CPU core.
LESION = BackboneRecipe(
    name="lesion",
    backbone=BackboneConfig(name="dynunet", channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2), num_res_units=1),
    epochs=120,
    upstream_cases=40,
    upstream_seed=1,
    upstream_size=160,
    schedule=PretrainConfig(denoise_weight=10.0),
)

#: The backbone :data:`LESION` made, shipped with the code (its JSON beside it holds its config and metrics). Made on
#: 2026-12-07 on one thread of an AMD EPYC (51 min) by ``python -m experiments.dev_sweep --profile lesion --denoise 10``,
#: from the upstream cohort of the generator before its noise calibration (commit d40a7b9; docs/design.md, "Synthetic
#: cohort"): the recipe run today draws its upstream cohort with the calibrated noise, so it makes a sibling of this
#: file, not a copy. Held-out Dice at 2.5 mm: liver 0.79, spleen 0.65, kidney 0.52, lesion 0.00 (the lesion class was
#: not learned in 3,840 steps); at 5 mm liver 0.87 (docs/results/simulation/dev_sweep.md).
EMBEDDED_BACKBONE = Path(__file__).parent / "weights" / "lesion_backbone.pt"
#: sha256 of :data:`EMBEDDED_BACKBONE`.
EMBEDDED_SHA256 = "c6eeeb1e7a031d7709ca3025d2c3d9b76583b55d30a1beca23510bd179d11c26"


def install_embedded_backbone(dest: Path) -> Path:
    """Copy the shipped backbone and its JSON to ``dest`` (and ``dest``'s ``.json``) after checking its sha256.

    Raises:
        CheckpointError: the shipped file is missing or is not the one this code names.
    """
    if not EMBEDDED_BACKBONE.is_file():
        raise CheckpointError(f"the shipped backbone is missing: {EMBEDDED_BACKBONE}")
    found = file_sha256(EMBEDDED_BACKBONE)
    if found != EMBEDDED_SHA256:
        raise CheckpointError(
            f"the shipped backbone {EMBEDDED_BACKBONE} has sha256 {found}, not the recorded {EMBEDDED_SHA256}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # atomic, the checkpoint last: a present .pt is whole and has its JSON (a killed install is redone next start)
    atomic_copy(config_path(EMBEDDED_BACKBONE), config_path(dest))
    atomic_copy(EMBEDDED_BACKBONE, dest)
    return dest
