"""Tests of the synthetic cohort generator (cohort.synth, cohort.phantom): layout, labels, geometry,
heterogeneity, determinism, bad input. Volumes are tiny (8³–32³) to stay fast on 2 CPU cores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cohort.acquisition import GROUPS
from cohort.msd import load_msd
from cohort.phantom import render_case
from cohort.synth import ORGAN_LABELS, CohortError, case_plan, case_rng, generate_cohort

GROUP_NAMES = {group.name for group in GROUPS}


def _read(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """60 cases at 32³ (three blocks of 20), shared by the read-only tests of this module."""
    out = tmp_path_factory.mktemp("cohort") / "synth"
    generate_cohort(out, cases=60, seed=3, size=32, progress=False)
    return out


@pytest.fixture(scope="module")
def volumes(cohort: Path) -> list[dict]:
    """Per case: name, group, image (int16 HU), label (uint8) and both NIfTI images."""
    loaded = []
    for case in load_msd(cohort).cases:
        image, image_nii = _read(case.image)
        label, label_nii = _read(case.label)
        loaded.append(dict(name=case.name, group=case.group, image=image, label=label, image_nii=image_nii,
                           label_nii=label_nii))
    return loaded


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_msd_layout_and_index(cohort: Path) -> None:
    meta = json.loads((cohort / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert meta["modality"] == {"0": "CT"}
    assert meta["tensorImageSize"] == "3D"
    assert meta["numTraining"] == 60 == len(meta["training"])
    assert meta["training"][3] == {"image": "./imagesTr/case_0003.nii.gz", "label": "./labelsTr/case_0003.nii.gz"}
    for entry in meta["training"]:
        assert (cohort / entry["image"]).is_file() and (cohort / entry["label"]).is_file()
    csv_rows = (cohort / "groups.csv").read_text().splitlines()
    assert csv_rows[0] == "case,group"
    assert dict(row.split(",") for row in csv_rows[1:]) == meta["slpt_groups"]
    assert set(meta["slpt_groups"].values()) <= GROUP_NAMES


def test_label_values_and_tumour_inside_liver(volumes: list[dict]) -> None:
    for case in volumes:
        label = case["label"]
        assert set(np.unique(label)) <= {0, 1, 2}, case["name"]
        assert (label == 1).sum() > (label == 2).sum(), case["name"]
        components, count = ndimage.label(label == 2)
        for index in range(1, count + 1):
            # every lesion is embedded in liver: its 1-voxel shell contains liver voxels
            shell = ndimage.binary_dilation(components == index) & (components != index)
            assert (label[shell] == 1).any(), f"{case['name']}: lesion {index} lies outside the liver"


def test_lesions_lie_also_deep_inside_the_liver(volumes: list[dict]) -> None:
    relative_depths, enclosed = [], 0
    for case in volumes:
        label, spacing = case["label"], case["image_nii"].header.get_zooms()
        depth = ndimage.distance_transform_edt(label > 0, sampling=spacing)
        components, count = ndimage.label(label == 2)
        for index in range(1, count + 1):
            lesion = components == index
            relative_depths.append(depth[lesion].max() / depth.max())
            shell = ndimage.binary_dilation(lesion) & ~lesion
            enclosed += not (label[shell] == 0).any()
    relative_depths = np.array(relative_depths)
    # lesions reach the deep half of the liver, and some are fully surrounded by liver; others touch its edge
    assert np.mean(relative_depths >= 0.5) >= 0.3, np.percentile(relative_depths, [10, 50, 90])
    assert 0.1 * len(relative_depths) <= enclosed < len(relative_depths)


def test_about_ten_percent_of_cases_have_no_tumour(volumes: list[dict]) -> None:
    without = sum(not (case["label"] == 2).any() for case in volumes)
    assert 0.05 * len(volumes) <= without <= 0.15 * len(volumes)
    lesion_counts = [ndimage.label(case["label"] == 2)[1] for case in volumes]
    assert max(lesion_counts) >= 3  # several lesions occur, not only one


def test_header_geometry(volumes: list[dict]) -> None:
    groups = {group.name: group for group in GROUPS}
    for case in volumes:
        image_nii, label_nii = case["image_nii"], case["label_nii"]
        assert case["image"].shape == case["label"].shape == (32, 32, 32)
        assert case["image"].dtype == np.int16 and case["label"].dtype == np.uint8
        np.testing.assert_array_equal(image_nii.affine, label_nii.affine)
        zooms = np.array(image_nii.header.get_zooms())
        np.testing.assert_allclose(np.abs(np.diag(image_nii.affine)[:3]), zooms, rtol=1e-5)
        np.testing.assert_allclose(image_nii.header.get_qform(), image_nii.affine, atol=1e-4)
        assert nib.aff2axcodes(image_nii.affine) == ("L", "P", "S")
        # in-plane: a 512² matrix at 0.7–0.9 mm resampled to 32 pixels
        assert zooms[0] == zooms[1] and 512 * 0.7 / 32 <= zooms[0] <= 512 * 0.9 / 32
        # slice spacing: the group's z coverage over 32 slices (±7 %)
        coverage = groups[case["group"]].z_coverage_mm
        assert coverage * 0.93 / 32 <= zooms[2] <= coverage * 1.07 / 32
        # the header's voxel size and the drawn anatomy agree: an adult liver of 0.6–3 litres
        liver_ml = (case["label"] > 0).sum() * np.prod(zooms) / 1000
        assert 600 <= liver_ml <= 3000, (case["name"], liver_ml)


def test_slice_spacing_differs_between_groups(volumes: list[dict]) -> None:
    spacing = {}
    for case in volumes:
        spacing.setdefault(case["group"], []).append(case["image_nii"].header.get_zooms()[2])
    medians = sorted(np.median(values) for values in spacing.values())
    assert all(b > 1.08 * a for a, b in zip(medians, medians[1:])), medians


def test_groups_unequal_and_at_least_four(volumes: list[dict]) -> None:
    counts = Counter(case["group"] for case in volumes)
    assert len(counts) >= 4 and set(counts) <= GROUP_NAMES
    assert max(counts.values()) >= 2 * min(counts.values()), counts
    assert len(set(counts.values())) == len(counts), counts  # all frequencies differ


def _core(mask: np.ndarray) -> np.ndarray:
    """Mask voxels away from its border (avoids partial-volume edges); the mask itself if nothing is left."""
    eroded = ndimage.binary_erosion(mask)
    return eroded if eroded.any() else mask


def test_groups_are_distinguishable(volumes: list[dict]) -> None:
    liver_mean, liver_sd, lesion_contrast = {}, {}, {}
    for case in volumes:
        image, label = case["image"].astype(np.float64), case["label"]
        liver = _core(label == 1)
        liver_mean.setdefault(case["group"], []).append(image[liver].mean())
        liver_sd.setdefault(case["group"], []).append(image[liver].std())
        if (label == 2).any():
            contrast = np.median(image[label == 2]) - np.median(image[liver])
            lesion_contrast.setdefault(case["group"], []).append(contrast)
    mean = {group: np.median(values) for group, values in liver_mean.items()}
    # contrast phase: liver enhancement native < arterial < delayed < portal-venous
    assert mean["native_low_dose"] + 8 < mean["arterial"] + 0 < mean["delayed"] - 5 < mean["portal_venous"] - 10, mean
    # dose: the low-dose group is much noisier
    assert np.median(liver_sd["native_low_dose"]) > 1.5 * np.median(liver_sd["portal_venous"]), liver_sd
    # lesion polarity: hyper-dense in the arterial phase, hypo-dense in portal-venous phase
    assert np.mean(np.array(lesion_contrast["arterial"]) > 0) >= 0.75, lesion_contrast["arterial"]
    assert np.mean(np.array(lesion_contrast["portal_venous"]) < 0) >= 0.75, lesion_contrast["portal_venous"]
    assert np.median(np.abs(lesion_contrast["native_low_dose"])) < np.median(np.abs(lesion_contrast["portal_venous"]))


def test_phantom_masks_are_consistent() -> None:
    for index in range(6):
        group, has_tumour = case_plan(11, index)
        phantom = render_case(case_rng(11, index), group, 24, with_tumour=has_tumour)
        assert not (phantom.tumour & ~phantom.liver).any()
        assert not (phantom.liver & (phantom.spleen | phantom.kidney)).any()
        assert phantom.tumour.any() == has_tumour
        upstream = phantom.label_map(upstream=True)
        np.testing.assert_array_equal(upstream == 1, phantom.liver)  # the liver label includes lesions
        np.testing.assert_array_equal(upstream == 2, phantom.spleen)
        np.testing.assert_array_equal(upstream == 3, phantom.kidney)
        assert not phantom.organ_lesion.any()  # organ lesions are drawn only when asked for (upstream cases)
        air = phantom.image[0, 0, :]  # a corner column lies outside the body
        assert air.mean() < -950


def test_organ_lesions_lie_in_spleen_or_kidney_and_differ_from_their_organ() -> None:
    contrasts = []
    for index in range(8):
        group, _ = case_plan(13, index, upstream=True)
        phantom = render_case(case_rng(13, index, upstream=True), group, 48, with_tumour=False, organ_lesions=True)
        assert phantom.organ_lesion.any() and not phantom.tumour.any()
        assert not (phantom.organ_lesion & ~(phantom.spleen | phantom.kidney)).any()
        labels = phantom.label_map(upstream=True)
        np.testing.assert_array_equal(labels == 4, phantom.organ_lesion)
        organ = (phantom.spleen | phantom.kidney) & ~phantom.organ_lesion
        contrasts.append(phantom.image[phantom.organ_lesion].mean() - phantom.image[organ].mean())
    # visible lesions: most differ from the organ around them by more than the noise of a voxel mean
    assert np.mean(np.abs(contrasts) > 5) >= 0.75, contrasts


def test_upstream_cohort_has_organ_and_lesion_labels_and_no_liver_tumour(tmp_path: Path) -> None:
    out = generate_cohort(tmp_path / "up", cases=6, seed=3, size=32, upstream=True, progress=False).parent
    dataset = load_msd(out)
    assert dataset.labels == ORGAN_LABELS
    assert "tumour" not in json.loads((out / "dataset.json").read_text())["labels"].values()
    seen = set()
    for case in dataset.cases:
        label = np.asarray(nib.load(case.label).dataobj)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        seen |= set(np.unique(label))
        assert case.group in GROUP_NAMES
    assert seen == {0, 1, 2, 3, 4}
    # independent of the downstream cohort of the same seed
    down = generate_cohort(tmp_path / "down", cases=1, seed=3, size=16, progress=False).parent
    assert (out / "imagesTr/case_0000.nii.gz").read_bytes() != (down / "imagesTr/case_0000.nii.gz").read_bytes()


def test_same_seed_same_bytes_and_cases_independent_of_count(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "a", cases=3, seed=5, size=16, progress=False)
    generate_cohort(tmp_path / "b", cases=3, seed=5, size=16, progress=False)
    generate_cohort(tmp_path / "c", cases=3, seed=6, size=16, progress=False)
    generate_cohort(tmp_path / "d", cases=5, seed=5, size=16, progress=False)
    a, b, c, d = (_file_bytes(tmp_path / name) for name in "abcd")
    assert a == b
    images = [f"imagesTr/case_000{i}.nii.gz" for i in range(3)]
    assert all(a[name] != c[name] for name in images)
    assert all(a[name] == d[name] for name in a if name.startswith(("imagesTr", "labelsTr")))


@pytest.mark.parametrize("size", [8, 16, 48, 64])
def test_every_size_renders(tmp_path: Path, size: int) -> None:
    out = generate_cohort(tmp_path / "s", cases=1, seed=0, size=size, progress=False).parent
    image, _ = _read(out / "imagesTr/case_0000.nii.gz")
    label, _ = _read(out / "labelsTr/case_0000.nii.gz")
    assert image.shape == label.shape == (size, size, size)
    assert (label == 1).any()
    assert image.min() >= -1024 and image.max() > 200  # air and bone present


def test_progress_bar_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    generate_cohort(tmp_path / "quiet", cases=1, seed=0, size=8, progress=False)
    assert capsys.readouterr().err == ""
    generate_cohort(tmp_path / "loud", cases=1, seed=0, size=8, progress=True)
    assert "synthetic cohort" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(cases=0), "cases"),
        (dict(cases=-3), "cases"),
        (dict(size=7), "size"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = dict(cases=2, seed=0, size=8, progress=False) | kwargs
    with pytest.raises(CohortError, match=message):
        generate_cohort(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_non_empty_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(CohortError, match="is not empty"):
        generate_cohort(tmp_path, cases=1, seed=0, size=8, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(CohortError, match=str(blocker / "cohort")):
        generate_cohort(blocker / "cohort", cases=1, seed=0, size=8, progress=False)
    with pytest.raises(CohortError, match=str(blocker)):
        generate_cohort(blocker, cases=1, seed=0, size=8, progress=False)
