"""The liver-ROI cascade on generated cases: stage 1 with a backbone pre-trained here holds all of the ground-truth
liver, the ROI logic on the ground-truth liver, the no-liver fallback, and segment_volume on LPS / oblique / thick-slice
storage coming back on the image's own grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from app.tasks.infer import _summary
from cohort.synth import generate_cohort
from models.backbone import BackboneConfig, build_backbone, load_backbone
from models.cascade import CascadeConfig, CoarsePass, locate_liver, roi_from_pass, to_working
from models.geometry import Box, affine_of, to_spacing
from models.inference import segment_volume
from models.pretrain import PretrainConfig, pretrain_backbone
from models.slpt import SLPTConfig, SLPTNet
from models.training import label_on_working_grid

#: 48³ generated cases are about 7.5 × 7.5 × 7-9 mm: the cascade at twice that, so it runs in seconds.
CASCADE = CascadeConfig(spacing=(8.0, 8.0, 8.0), coarse_spacing=(16.0, 16.0, 16.0), margin_mm=16.0)
#: Stage 2 at the grid the test backbone was pre-trained on.
MODEL_GEOMETRY = {"cascade": CascadeConfig(spacing=(16.0, 16.0, 16.0), coarse_spacing=(16.0, 16.0, 16.0), margin_mm=16.0)}
CASES = 4


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cascade") / "cohort"
    generate_cohort(root, cases=CASES, seed=11, size=48, progress=False)
    return root


@pytest.fixture(scope="module")
def backbone_path(tmp_path_factory) -> Path:
    """A tiny UNet pre-trained (about 10 s) on a separate upstream cohort at stage 1's spacing."""
    root = tmp_path_factory.mktemp("upstream")
    generate_cohort(root / "up", cases=12, seed=3, size=48, upstream=True, progress=False)
    torch.manual_seed(0)
    path = root / "backbone.pt"
    metrics = pretrain_backbone(
        root / "up", path, BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1), epochs=80,
        schedule=PretrainConfig(patch_size=(16, 16, 16), spacing=CASCADE.coarse_spacing, coarse_spacing=None,
                                batch_size=4, lr=1e-2, val_fraction=0.25),
    )
    assert metrics["val_dice"]["liver"] > 0.6, metrics["val_dice"]
    return path


def case_files(cohort: Path, index: int) -> tuple[Path, Path]:
    name = f"case_{index:04d}.nii.gz"
    return cohort / "imagesTr" / name, cohort / "labelsTr" / name


def test_stage1_roi_holds_all_of_the_ground_truth_liver(cohort, backbone_path):
    backbone, _ = load_backbone(backbone_path)
    for index in range(CASES):
        image, label = case_files(cohort, index)
        _original, working = to_working(image, CASCADE)
        liver = label_on_working_grid(label, working) >= 1
        roi = locate_liver(backbone, working, CASCADE)
        assert roi.found and roi.liver_ml > CASCADE.min_liver_ml, (index, roi)
        truth = Box.of_mask(liver)
        assert roi.box.contains(truth), (index, roi.box, truth)
        assert liver[roi.box.slices()].sum() == liver.sum()
        # The ROI is a region, not the whole volume.
        assert np.prod(roi.box.shape) < 0.6 * np.prod(working.shape[1:]), (index, roi.box, working.shape)


def rotation_z(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    out = np.eye(4)
    out[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return out


def restored(image: Path, label: Path, variant: str, out: Path) -> tuple[Path, Path]:
    """The same case stored another way: ``flipped`` (RAS instead of the generator's LPS, same scene), ``oblique``
    (the scene turned 20° about z, then tilted 10° about x) or ``thick`` (every other slice, twice as thick)."""
    img, lab = nib.load(image), nib.load(label)
    data, labels, affine = np.asarray(img.dataobj, np.float32), np.asarray(lab.dataobj, np.uint8), img.affine
    if variant == "flipped":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = np.array(data.shape[:2]) - 1
        data, labels, affine = data[::-1, ::-1].copy(), labels[::-1, ::-1].copy(), affine @ flip
    elif variant == "oblique":
        tilt = np.eye(4)
        tilt[1:3, 1:3] = rotation_z(10.0)[:2, :2]
        affine = tilt @ rotation_z(20.0) @ affine
    elif variant == "thick":
        data, labels = data[:, :, ::2].copy(), labels[:, :, ::2].copy()
        affine = affine @ np.diag([1.0, 1.0, 2.0, 1.0])
    out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), out / f"{variant}_image.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), out / f"{variant}_label.nii.gz")
    return out / f"{variant}_image.nii.gz", out / f"{variant}_label.nii.gz"


def test_roi_from_the_ground_truth_liver_holds_it_on_every_storage(cohort, tmp_path):
    """Stage 1's box logic fed the ground-truth liver on the coarse grid: the working-grid ROI holds all of it, with
    the margin, on LPS, RAS, oblique and thick-slice storage."""
    for index in range(2):
        for variant in ("as_generated", "flipped", "oblique", "thick"):
            image, label = case_files(cohort, index)
            if variant != "as_generated":
                image, label = restored(image, label, variant, tmp_path / f"{index}")
            _original, working = to_working(image, CASCADE)
            coarse = to_spacing(working, CASCADE.coarse_spacing)
            coarse_liver = label_on_working_grid(label, coarse) >= 1
            result = CoarsePass(coarse_hu=coarse[0].numpy(), affine=affine_of(coarse), organ=coarse_liver,
                                stage_stats=[])
            roi = roi_from_pass(result, working, CASCADE)
            liver = label_on_working_grid(label, working) >= 1
            truth = Box.of_mask(liver)
            assert roi.found, (index, variant)
            assert roi.box.contains(truth), (index, variant, roi.box, truth)
            # The margin (2 working voxels) is there, and the box is not much larger than margin + one coarse voxel.
            shape = working.shape[1:]
            for axis in range(3):
                below, above = truth.start[axis] - roi.box.start[axis], roi.box.stop[axis] - truth.stop[axis]
                assert below >= 2 or roi.box.start[axis] == 0, (index, variant, axis, roi.box, truth)
                assert above >= 2 or roi.box.stop[axis] == shape[axis], (index, variant, axis, roi.box, truth)
                assert below <= 5 and above <= 5, (index, variant, axis, roi.box, truth)
            # liver_ml is the coarse mask's volume, about the true liver's.
            true_ml = liver.sum() * abs(np.linalg.det(affine_of(working)[:3, :3])) / 1000.0
            assert 0.6 * true_ml < roi.liver_ml < 1.6 * true_ml, (index, variant, roi.liver_ml, true_ml)


def test_no_liver_falls_back_to_the_whole_volume(cohort):
    image, _ = case_files(cohort, 0)
    _original, working = to_working(image, CASCADE)
    coarse = to_spacing(working, CASCADE.coarse_spacing)
    empty = np.zeros(coarse.shape[1:], dtype=bool)
    for organ, ml in ((empty, 0.0), (np.pad(np.ones((1, 1, 1), bool), [(0, s - 1) for s in empty.shape]), 4.096)):
        roi = roi_from_pass(CoarsePass(coarse[0].numpy(), affine_of(coarse), organ, []), working, CASCADE)
        assert not roi.found
        assert roi.box == Box.whole(working.shape)
        assert roi.liver_ml == pytest.approx(ml, abs=1e-3)  # one 16 mm voxel is 4.1 ml, below min_liver_ml


def background_only_backbone() -> torch.nn.Module:
    """A backbone whose upstream output is background everywhere (its logits shifted by a hook)."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=4))
    shift = torch.tensor([100.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1, 1)
    backbone.register_forward_hook(lambda _module, _inputs, output: output + shift.to(output.dtype))
    return backbone


def test_segment_volume_without_a_liver_segments_the_whole_volume_and_says_so(cohort):
    image, _ = case_files(cohort, 1)
    model = SLPTNet(background_only_backbone(), SLPTConfig(roi_size=(16, 16, 16), **MODEL_GEOMETRY))
    result = segment_volume(model, image)
    shape = nib.load(image).shape
    _original, working = to_working(image, MODEL_GEOMETRY["cascade"])
    assert not result.roi.found and result.roi.box == Box.whole(working.shape)
    assert result.prediction.label.shape == tuple(working.shape[1:])
    label = result.label_on_original()
    assert label.shape == shape and not label.any()
    summary = _summary(result, "v0001")
    assert summary["liver_found"] is False and "no liver" in summary["warning"]


@pytest.fixture(scope="module")
def model(backbone_path) -> SLPTNet:
    """All FPU gates zero (as built) and the tumour class switched off: the network predicts the backbone's
    upstream liver against its background."""
    backbone, _ = load_backbone(backbone_path)
    net = SLPTNet(backbone, SLPTConfig(num_classes=3, roi_size=(16, 16, 16), **MODEL_GEOMETRY))
    assert all(float(fpu.gate.abs().max()) == 0.0 for fpu in net.fpus.values())
    with torch.no_grad():
        net.head.bias[2] = -1e4
    return net


@pytest.mark.parametrize("variant", ["flipped", "oblique", "thick"])
def test_segment_volume_comes_back_on_the_images_own_grid(cohort, model, tmp_path, variant):
    image, label = restored(*case_files(cohort, 2), variant, tmp_path)
    stored = nib.load(image)
    truth = np.asarray(nib.load(label).dataobj) >= 1
    result = segment_volume(model, image)
    assert result.roi.found
    np.testing.assert_allclose(result.original_affine, stored.affine, atol=1e-4)
    predicted = result.label_on_original()
    assert predicted.shape == stored.shape and predicted.dtype == np.uint8
    assert set(np.unique(predicted).tolist()) <= {0, 1}  # background and the upstream liver only
    liver = predicted == 1
    assert liver.sum() > 0.3 * truth.sum()

    # Direct computation: every original voxel labelled liver sits (through physical space) on a liver voxel of the
    # ROI prediction, and the ROI prediction's interior lands on liver voxels of the image's grid.
    index = np.argwhere(np.ones(stored.shape, bool)).T.astype(np.float64)
    to_roi = np.linalg.inv(result.roi_affine) @ stored.affine
    at = np.rint(to_roi[:3, :3] @ index + to_roi[:3, 3:]).astype(int)
    roi_label = result.prediction.label == 1
    inside = np.all((at >= 0) & (at < np.array(roi_label.shape)[:, None]), axis=0)
    # The label is resampled (interpolated) onto the image's grid, so a liver voxel may sit up to one ROI voxel away
    # along every axis at once from the ROI voxel its centre rounds to: grow and shrink by the full 3×3×3 neighbourhood.
    cube = np.ones((3, 3, 3), bool)
    grown, core = ndimage.binary_dilation(roi_label, cube), ndimage.binary_erosion(roi_label, cube)
    flat = liver.reshape(-1)
    hit = np.zeros_like(flat)
    hit[inside] = grown[tuple(at[:, inside])]
    assert not (flat & ~hit).any()  # no liver outside the (grown) ROI prediction, nor outside the ROI
    deep = np.zeros_like(flat)
    deep[inside] = core[tuple(at[:, inside])]
    assert deep.any() and flat[deep].all()

    # The known structure: the prediction is the ground-truth liver's region, in the right place.
    near = ndimage.binary_dilation(truth, iterations=2)
    assert near[liver].mean() > 0.8, near[liver].mean()
    centre = lambda mask: stored.affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + stored.affine[:3, 3]  # noqa: E731
    assert np.linalg.norm(centre(liver) - centre(truth)) < 25.0


def test_lps_and_ras_storage_of_one_scene_give_the_same_label(cohort, model, tmp_path):
    image, label = case_files(cohort, 3)
    flipped, _ = restored(image, label, "flipped", tmp_path)
    as_generated = segment_volume(model, image).label_on_original()
    from_flipped = segment_volume(model, flipped).label_on_original()
    assert as_generated.any()
    np.testing.assert_array_equal(from_flipped, as_generated[::-1, ::-1])
