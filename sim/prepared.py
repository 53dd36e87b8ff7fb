"""The simulator's cohort, prepared once: every case on the working grid, cropped to its liver ROI, and embedded.

Preparation runs the same code as the server (:mod:`models.geometry`, :mod:`models.cascade`,
:mod:`models.embedding`): each image is reoriented and resampled to the profile's working spacing, the frozen
backbone's coarse pass finds the liver (stage 1) and gives the embedding, and the case is cropped to

- the *training crop*: stage 1's ROI joined with the labelled liver's box (what :func:`models.training.roi_case`
  trains on), and inside it
- the *inference ROI*: stage 1's box alone, which evaluation and uncertainty scoring see, exactly as inference
  on the server does.

Evaluation is honest about stage 1: label voxels of the working grid outside the inference ROI are kept as
counts (``outside_liver``, ``outside_tumour``) and count as missed. A case whose stage 1 found no liver is
segmented whole, as the server would.

The cache (:func:`prepared_cohort`) is one ``.npz`` per run folder, geometry and backbone; crops have different
shapes, so each case has its own arrays. :func:`split_pool_test` splits a prepared cohort into the pool and the test
set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cohort.msd import MSDDataset
from sklearn.model_selection import train_test_split

from models.backbone import load_backbone
from models.cascade import CascadeConfig, coarse_pass, roi_from_pass, to_working
from models.checkpoint import backbone_fingerprint
from models.embedding import embedding_from_pass
from models.geometry import Box
from models.training import label_on_working_grid, training_box
from sim.profiles import SimProfile
from storage.atomic import atomic_path

TUMOUR, LIVER = 2, 1


class PreparationError(ValueError):
    """The data cannot be prepared for a simulation; the message names the case and the problem."""


@dataclass
class PreparedCohort:
    """A labelled cohort on the working grid.

    Attributes:
        names, groups: N case names and acquisition groups (None where the data records none).
        images, labels: N training crops, (X_i, Y_i, Z_i) float32 HU and uint8 classes (0, 1 liver, 2 tumour).
        rois: N inference ROIs, ((start), (stop)) inside the training crop.
        roi_found: N bools, False where stage 1 found no liver (the ROI is then the whole volume).
        roi_holds_liver: N bools, True where the inference ROI holds every labelled liver voxel.
        outside_liver, outside_tumour: N counts of labelled voxels (liver incl. tumour; tumour) outside the ROI.
        embeddings: (N, D) float32 backbone embeddings.
    """

    names: list[str]
    groups: list[str | None]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    rois: list[Box]
    roi_found: np.ndarray
    roi_holds_liver: np.ndarray
    outside_liver: np.ndarray
    outside_tumour: np.ndarray
    embeddings: np.ndarray

    def roi_image(self, i: int) -> np.ndarray:
        """Case ``i``'s inference ROI, (X, Y, Z) HU: what the server's stage 2 would segment."""
        return self.images[i][self.rois[i].slices()]

    def roi_label(self, i: int) -> np.ndarray:
        return self.labels[i][self.rois[i].slices()]

    def digest(self) -> str:
        """SHA-256 over names, groups and each case's labelled voxels (its label inside the labels' own bounding box):
        the data the rows are measured on. Stage 1's ROIs and the embeddings are left out: they are the backbone's
        float output, which another kind of CPU may round differently from the same kept backbone."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.names, self.groups]).encode())
        for label in self.labels:
            box = Box.of_mask(label > 0)
            labelled = label[box.slices()] if box is not None else label[:0, :0, :0]
            digest.update(str(labelled.shape).encode())
            digest.update(np.ascontiguousarray(labelled).tobytes())
        return digest.hexdigest()

    def has_tumour(self) -> np.ndarray:
        """(N,) bool: the case has tumour voxels (inside the crop or outside the ROI)."""
        return np.array([(lab == TUMOUR).any() for lab in self.labels]) | (self.outside_tumour > 0)


def prepare_cohort(dataset: MSDDataset, backbone_path: Path, cfg: CascadeConfig) -> PreparedCohort:
    """Load, resample, locate, crop and embed every labelled case of ``dataset`` (a tqdm bar shows progress)."""
    cases = [c for c in dataset.cases if c.label is not None]
    if len(cases) < 4:
        raise PreparationError(f"{dataset.root} has {len(cases)} labelled cases; a simulation needs at least 4")
    if sorted(dataset.labels) != [0, 1, 2]:
        raise PreparationError(f"{dataset.root}: expected labels 0 background, 1 liver, 2 tumour, got {dataset.labels}")
    backbone, _ = load_backbone(backbone_path)
    fields: dict[str, list] = {k: [] for k in (
        "images", "labels", "rois", "roi_found", "roi_holds_liver", "outside_liver", "outside_tumour", "embeddings")}
    for case in tqdm(cases, desc="resampling, locating and embedding", unit="volume"):
        _original, working = to_working(case.image, cfg)
        label = label_on_working_grid(case.label, working)
        result = coarse_pass(backbone, working, cfg, collect_stats=True)
        roi = roi_from_pass(result, working, cfg)
        crop = training_box(roi.box, label, working, cfg.margin_mm)
        inside = np.zeros(label.shape, dtype=bool)
        inside[roi.box.slices()] = True
        fields["images"].append(working[0].as_tensor().numpy()[crop.slices()].astype(np.float32))
        fields["labels"].append(label[crop.slices()].astype(np.uint8))
        fields["rois"].append(Box(tuple(a - c for a, c in zip(roi.box.start, crop.start)),
                                  tuple(b - c for b, c in zip(roi.box.stop, crop.start))))
        fields["roi_found"].append(roi.found)
        fields["roi_holds_liver"].append(not ((label >= LIVER) & ~inside).any())
        fields["outside_liver"].append(int(((label >= LIVER) & ~inside).sum()))
        fields["outside_tumour"].append(int(((label == TUMOUR) & ~inside).sum()))
        fields["embeddings"].append(embedding_from_pass(result))
    return PreparedCohort(
        names=[c.name for c in cases], groups=[c.group for c in cases],
        images=fields["images"], labels=fields["labels"], rois=fields["rois"],
        roi_found=np.array(fields["roi_found"]), roi_holds_liver=np.array(fields["roi_holds_liver"]),
        outside_liver=np.array(fields["outside_liver"]), outside_tumour=np.array(fields["outside_tumour"]),
        embeddings=np.stack(fields["embeddings"]),
    )


def save_prepared(cohort: PreparedCohort, path: Path) -> None:
    """Write the cache atomically (an interrupted write leaves no half file)."""
    arrays = {f"image_{i}": image for i, image in enumerate(cohort.images)}
    arrays |= {f"label_{i}": label for i, label in enumerate(cohort.labels)}
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        np.savez(
            handle, names=np.array(cohort.names), groups=np.array(["" if g is None else g for g in cohort.groups]),
            rois=np.array([[*b.start, *b.stop] for b in cohort.rois]), roi_found=cohort.roi_found,
            roi_holds_liver=cohort.roi_holds_liver, outside_liver=cohort.outside_liver,
            outside_tumour=cohort.outside_tumour, embeddings=cohort.embeddings, **arrays,
        )


def load_prepared(path: Path) -> PreparedCohort:
    with np.load(path) as data:
        names = data["names"].tolist()
        return PreparedCohort(
            names=names, groups=[g or None for g in data["groups"].tolist()],
            images=[data[f"image_{i}"] for i in range(len(names))],
            labels=[data[f"label_{i}"] for i in range(len(names))],
            rois=[Box(tuple(int(v) for v in r[:3]), tuple(int(v) for v in r[3:])) for r in data["rois"]],
            roi_found=data["roi_found"], roi_holds_liver=data["roi_holds_liver"],
            outside_liver=data["outside_liver"], outside_tumour=data["outside_tumour"],
            embeddings=data["embeddings"],
        )


def cascade_of(profile: SimProfile) -> CascadeConfig:
    """The cascade geometry of a profile (the server's defaults unless the profile says otherwise)."""
    return CascadeConfig(spacing=profile.spacing, coarse_spacing=profile.coarse_spacing, margin_mm=profile.margin_mm)


def prepared_cohort(
    dataset: MSDDataset, backbone_path: Path, out: Path, profile: SimProfile, backbone_sha: str | None = None,
) -> tuple[PreparedCohort, Path]:
    """The run's prepared cohort, from its cache in ``out/cache`` when present (prepared once per run folder, geometry
    and backbone: stage 1's ROIs and the embeddings depend on the backbone) -> (cohort, cache file). ``backbone_sha``:
    the backbone's weights fingerprint (:func:`models.checkpoint.backbone_fingerprint`) where the caller has it."""
    cfg = cascade_of(profile)
    fingerprint = (backbone_sha or backbone_fingerprint(load_backbone(backbone_path)[0]))[:12]
    tag = "_".join(f"{v:g}" for v in (*cfg.spacing, *cfg.coarse_spacing, cfg.margin_mm)) + f"_{fingerprint}"
    cache = out / "cache" / f"prepared_{tag}.npz"
    expected = [c.name for c in dataset.cases if c.label is not None]
    if cache.is_file():
        cohort = load_prepared(cache)
        if cohort.names != expected:
            raise PreparationError(f"{cache} was made from other data: use a fresh --out folder")
        return cohort, cache
    cohort = prepare_cohort(dataset, backbone_path, cfg)
    save_prepared(cohort, cache)
    return cohort, cache


def split_pool_test(cohort: PreparedCohort, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(pool indices, test indices): a split fixed by ``seed``, stratified by group and tumour presence."""
    strata = np.array([f"{g}|{t}" for g, t in zip(cohort.groups, cohort.has_tumour())])
    _, counts = np.unique(strata, return_counts=True)
    n_test = int(round(test_fraction * len(cohort.names)))
    # Stratify only when every stratum can give the test and the pool a member each.
    stratify = strata if counts.min() >= 2 and n_test >= len(counts) and len(strata) - n_test >= len(counts) else None
    pool, test = train_test_split(np.arange(len(strata)), test_size=n_test, random_state=seed, stratify=stratify)
    return sorted(pool.tolist()), sorted(test.tolist())
