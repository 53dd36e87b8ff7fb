"""models.geometry on real files: NIfTI and NRRD read alike, LPS / oblique / thick-slice grids survive the trip to
the working spacing and back, boxes map through physical space, the HU window, and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.errors import ModelError
from models.geometry import (
    Box,
    affine_of,
    box_on_grid,
    load_image,
    load_label,
    map_to_grid,
    resample_to_grid,
    to_spacing,
    window_hu,
)

SHAPE = (30, 26, 14)
#: A sphere at a known physical (RAS, mm) position, far enough inside every test grid.
CENTRE_MM = np.array([4.0, -6.0, 3.0])
RADIUS_MM = 9.0


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def grid_affine(spacing, matrix=np.eye(3), shape=SHAPE) -> np.ndarray:
    """A voxel-to-RAS affine whose grid centre is at the RAS origin."""
    affine = np.eye(4)
    affine[:3, :3] = matrix @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


#: The geometries users have: RAS-stored, LPS-stored (first two axes reversed), oblique (rotated about a tilted
#: axis, with a flipped axis too), and 10 mm slices.
GEOMETRIES = {
    "ras": grid_affine((2.0, 2.0, 3.0)),
    "lps": grid_affine((2.0, 2.0, 3.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique": grid_affine((2.0, 2.2, 3.0), rotation([1.0, 0.5, 2.0], 25.0) @ np.diag([1.0, -1.0, 1.0])),
    "thick_slices": grid_affine((1.5, 1.5, 10.0), shape=SHAPE),
}


def world_coordinates(affine: np.ndarray, shape) -> np.ndarray:
    """(3, *shape) RAS mm of every voxel centre."""
    index = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", affine[:3, :3], index) + affine[:3, 3].reshape(3, 1, 1, 1)


def smooth(world: np.ndarray) -> np.ndarray:
    """A smooth field of physical position (varies over tens of mm): what a resampling round trip must keep."""
    x, y, z = world
    return (100.0 * np.sin(x / 15.0) + 60.0 * np.cos(y / 12.0) + 2.0 * z).astype(np.float32)


def distance_to_centre(world: np.ndarray) -> np.ndarray:
    return np.sqrt(((world - CENTRE_MM.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_nrrd(path: Path, data: np.ndarray, affine_ras: np.ndarray) -> Path:
    """The same voxels and geometry as an NRRD written by SimpleITK (which stores LPS, (Z, Y, X) arrays)."""
    image = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(image, str(path))
    return path


# -- reading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["ras", "lps", "oblique"])
def test_nifti_and_nrrd_give_the_same_array_and_ras_affine(tmp_path, geometry):
    affine = GEOMETRIES[geometry]
    data = np.random.default_rng(0).normal(0, 100, SHAPE).astype(np.float32)
    from_nifti = load_image(write_nifti(tmp_path / "v.nii.gz", data, affine))
    from_nrrd = load_image(write_nrrd(tmp_path / "v.nrrd", data, affine))

    assert from_nifti.shape == from_nrrd.shape == (1, *SHAPE)
    np.testing.assert_array_equal(from_nifti[0].numpy(), data)
    np.testing.assert_array_equal(from_nrrd[0].numpy(), data)
    np.testing.assert_allclose(affine_of(from_nifti), affine, atol=1e-5)
    np.testing.assert_allclose(affine_of(from_nrrd), affine, atol=1e-5)


def test_nrrd_label_reads_as_integer_classes(tmp_path):
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[5:10, 5:10, 3:6] = 1
    label[7, 7, 4] = 2
    loaded = load_label(write_nrrd(tmp_path / "label.nrrd", label, GEOMETRIES["lps"]))
    assert loaded.dtype == torch.int64 and loaded.shape == (1, *SHAPE)
    np.testing.assert_array_equal(loaded[0].numpy(), label)
    np.testing.assert_allclose(affine_of(loaded), GEOMETRIES["lps"], atol=1e-5)


def test_lps_stored_file_is_the_ras_one_mirrored(tmp_path):
    """The same physical scene stored RAS and LPS: after to_spacing both are the same RAS volume."""
    ras, lps = GEOMETRIES["ras"], GEOMETRIES["lps"]
    data_ras = smooth(world_coordinates(ras, SHAPE))
    data_lps = smooth(world_coordinates(lps, SHAPE))
    np.testing.assert_allclose(data_lps, data_ras[::-1, ::-1, :], atol=1e-3)  # same scene, axes reversed
    a = to_spacing(load_image(write_nifti(tmp_path / "ras.nii.gz", data_ras, ras)), (2.0, 2.0, 3.0))
    b = to_spacing(load_image(write_nifti(tmp_path / "lps.nii.gz", data_lps, lps)), (2.0, 2.0, 3.0))
    assert a.shape == b.shape
    np.testing.assert_allclose(affine_of(a), affine_of(b), atol=1e-4)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-2)
    assert np.all(np.diag(affine_of(b))[:3] > 0)  # RAS: every axis points the positive way


# -- the round trip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_working_spacing_and_back_keeps_a_smooth_image(tmp_path, geometry):
    affine = GEOMETRIES[geometry]
    world = world_coordinates(affine, SHAPE)
    data = smooth(world)
    original = load_image(write_nifti(tmp_path / "v.nii.gz", data, affine))

    working = to_spacing(original, (2.5, 2.5, 2.5))
    spacing = np.linalg.norm(affine_of(working)[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, 2.5, atol=1e-4)
    # On the working grid the values are the same field at the working voxels' physical positions.
    work_world = world_coordinates(affine_of(working), working.shape[1:])
    inside = interior(work_world, affine, SHAPE, margin_voxels=1.5)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(working[0].numpy()[inside], smooth(work_world)[inside], atol=6.0)

    back, box = map_to_grid(working, affine_of(working), affine_of(original), SHAPE)
    assert back.shape[1:] == box.shape
    restored = np.zeros(SHAPE, dtype=np.float32)
    restored[box.slices()] = back[0].numpy()
    keep = interior(world, affine_of(working), working.shape[1:], margin_voxels=1.0)
    keep &= interior(world, affine, SHAPE, margin_voxels=2.0)
    assert keep.mean() > 0.2
    error = np.abs(restored - data)[keep]
    assert error.max() < 10.0 and error.mean() < 2.0, (error.max(), error.mean())  # field spans about ±180


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_a_sphere_lands_on_the_right_voxels_after_the_round_trip(tmp_path, geometry):
    affine = GEOMETRIES[geometry]
    world = world_coordinates(affine, SHAPE)
    distance = distance_to_centre(world)
    mask = (distance < RADIUS_MM).astype(np.uint8)
    assert 50 < mask.sum() < mask.size / 4
    original = load_label(write_nifti(tmp_path / "sphere.nii.gz", mask, affine))

    working = to_spacing(original, (2.5, 2.5, 2.5), mode="nearest")
    work_distance = distance_to_centre(world_coordinates(affine_of(working), working.shape[1:]))
    on_working = working[0].numpy().astype(bool)
    # Nearest-neighbour resampling moves a boundary by at most half an original voxel diagonal.
    slack = 0.5 * np.linalg.norm(np.linalg.norm(affine[:3, :3], axis=0)) + 1e-3
    assert on_working[work_distance < RADIUS_MM - slack].all()
    assert not on_working[work_distance > RADIUS_MM + slack].any()

    back, box = map_to_grid(working.float(), affine_of(working), affine_of(original), SHAPE, mode="nearest")
    restored = np.zeros(SHAPE, dtype=bool)
    restored[box.slices()] = back[0].numpy() > 0.5
    slack_back = slack + 0.5 * np.sqrt(3) * 2.5
    assert restored[distance < RADIUS_MM - slack_back].all()
    assert not restored[distance > RADIUS_MM + slack_back].any()
    agreement = (restored == mask.astype(bool)).mean()
    assert agreement > 0.97, agreement
    # The centre of mass stays where the sphere is, in millimetres.
    centre = world[:, restored].mean(axis=1)
    np.testing.assert_allclose(centre, CENTRE_MM, atol=1.5)


def interior(world: np.ndarray, affine: np.ndarray, shape, margin_voxels: float) -> np.ndarray:
    """Points of ``world`` (3, *S) at least ``margin_voxels`` inside the grid (``affine``, ``shape``)."""
    index = np.einsum("ij,j...->i...", np.linalg.inv(affine)[:3, :3], world) + np.linalg.inv(affine)[:3, 3].reshape(
        3, *([1] * (world.ndim - 1))
    )
    upper = (np.asarray(shape, dtype=np.float64) - 1 - margin_voxels).reshape(3, *([1] * (world.ndim - 1)))
    return ((index >= margin_voxels) & (index <= upper)).all(axis=0)


def test_map_to_grid_covers_only_the_roi_and_pads_with_zero():
    """A small ROI on a large grid: only the covered box is resampled, background beyond the ROI's edge."""
    dst_affine = grid_affine((1.0, 1.0, 1.0), shape=(60, 60, 60))
    roi_affine = dst_affine @ np.array([[2.0, 0, 0, 20], [0, 2.0, 0, 10], [0, 0, 2.0, 30], [0, 0, 0, 1]])
    values = torch.ones((2, 5, 6, 4))
    out, box = map_to_grid(values, roi_affine, dst_affine, (60, 60, 60))
    # ROI voxel centres 20..28, 10..20, 30..36 in destination voxels; edges one destination voxel further.
    assert box == Box((19, 9, 29), (30, 22, 38))
    assert out.shape == (2, *box.shape)
    assert torch.all(out[:, 2:-2, 2:-2, 2:-2] == 1.0)
    assert torch.all(out[:, 0] <= 0.5)  # the box's first plane lies on the ROI's outer edge
    # Resampled onto the whole grid: zeros beyond the ROI's edge, in every channel.
    whole = resample_to_grid(values, roi_affine, dst_affine, (60, 60, 60))
    assert whole.shape == (2, 60, 60, 60)
    outside = np.ones((60, 60, 60), dtype=bool)
    outside[box.slices()] = False
    assert float(whole[:, torch.from_numpy(outside)].abs().max()) < 1e-5
    torch.testing.assert_close(whole[(slice(None), *box.slices())], out, atol=1e-5, rtol=0)


# -- boxes through physical space ------------------------------------------------------------------------------


def test_box_on_grid_maps_through_physical_space():
    src = np.eye(4)  # 1 mm, origin 0
    dst = np.diag([2.0, 2.0, 2.0, 1.0])
    box = Box((10, 10, 10), (20, 20, 20))  # voxel edges 9.5 .. 19.5 mm
    # 2 mm voxels v cover [2v-1, 2v+1] mm: 5 .. 10 overlap the box.
    assert box_on_grid(box, src, dst, (40, 40, 40)) == Box((5, 5, 5), (11, 11, 11))
    # A 4 mm margin is two destination voxels on every side.
    assert box_on_grid(box, src, dst, (40, 40, 40), margin_mm=4.0) == Box((3, 3, 3), (13, 13, 13))
    # Clipped to the destination grid.
    assert box_on_grid(box, src, dst, (8, 40, 9), margin_mm=4.0) == Box((3, 3, 3), (8, 13, 9))
    # Same grid: the identity.
    assert box_on_grid(box, src, src, (40, 40, 40)) == box


def test_box_on_a_flipped_and_oblique_grid_covers_the_structure():
    """The box mapped onto an LPS / oblique grid holds every destination voxel inside the source box."""
    src = grid_affine((2.0, 2.0, 3.0))
    box = Box((8, 6, 3), (20, 15, 9))
    inside_src = np.zeros(SHAPE, dtype=bool)
    inside_src[box.slices()] = True
    for name in ("lps", "oblique", "thick_slices"):
        dst = GEOMETRIES[name]
        mapped = box_on_grid(box, src, dst, SHAPE)
        # Which destination voxel centres fall in the source box (through physical space)?
        index = np.einsum("ij,j...->i...", (np.linalg.inv(src) @ dst)[:3, :3], np.stack(np.meshgrid(
            *[np.arange(s, dtype=np.float64) for s in SHAPE], indexing="ij"))) + (np.linalg.inv(src) @ dst)[:3, 3].reshape(3, 1, 1, 1)
        hit = ((index >= np.array(box.start).reshape(3, 1, 1, 1) - 0.5)
               & (index < np.array(box.stop).reshape(3, 1, 1, 1) - 0.5)).all(axis=0)
        tight = Box.of_mask(hit)
        assert tight is not None and mapped.contains(tight), (name, mapped, tight)
        # ... and is not much larger than needed (one voxel of rounding per side).
        assert all(a - 1 <= b for a, b in zip(tight.start, mapped.start)), (name, mapped, tight)
        assert all(b <= a + 1 for a, b in zip(tight.stop, mapped.stop)) or name == "oblique", (name, mapped, tight)
    # The LPS grid mirrors the first two axes: the box is mirrored too.
    lps_box = box_on_grid(box, src, GEOMETRIES["lps"], SHAPE)
    assert lps_box == Box((SHAPE[0] - 20, SHAPE[1] - 15, 3), (SHAPE[0] - 8, SHAPE[1] - 6, 9))


# -- HU window -------------------------------------------------------------------------------------------------


def test_window_hu_clips_and_scales():
    hu = np.array([[[-1000.0, -200.0, 25.0, 250.0, 3000.0]]])
    scaled = window_hu(hu)
    assert scaled.dtype == torch.float32 and scaled.shape == hu.shape
    np.testing.assert_allclose(scaled.numpy().ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(window_hu(hu, (0.0, 100.0)).numpy().ravel(), [0.0, 0.0, 0.25, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ModelError, match="low < high"):
        window_hu(hu, (100.0, 100.0))


# -- bad input -------------------------------------------------------------------------------------------------


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found.*missing.nii.gz"):
        load_image(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize("name", ["broken.nii.gz", "broken.nii", "broken.nrrd"])
def test_unreadable_file_is_a_model_error(tmp_path, name):
    path = tmp_path / name
    payload = b"this is not a volume" * 20
    path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    with pytest.raises(ModelError, match=f"cannot read volume .*{name}"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd"])
@pytest.mark.parametrize("shape", [(20, 18), (12, 10, 8, 3)], ids=["2d", "4d"])
def test_2d_and_4d_data_are_model_errors(tmp_path, fmt, shape):
    data = np.zeros(shape, dtype=np.float32)
    path = tmp_path / f"bad.{fmt}"
    if fmt == "nii.gz":
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    else:
        # SimpleITK arrays are (Z, Y, X); 4D data is a vector image (components last).
        vector = len(shape) == 4
        order = (1, 0) if not vector else (2, 1, 0, 3)
        image = sitk.GetImageFromArray(np.transpose(data, order), isVector=vector)
        sitk.WriteImage(image, str(path))
    with pytest.raises(ModelError, match="expected a 3D volume"):
        load_image(path)


def test_bare_arrays_must_be_3d_and_spacing_must_be_positive():
    with pytest.raises(ModelError, match="expected a 3D volume"):
        load_image(np.zeros((4, 5)))
    with pytest.raises(ModelError, match="expected a 3D volume"):
        load_image(np.zeros((2, 4, 5, 6)))
    volume = load_image(np.zeros((4, 5, 6), dtype=np.float32), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    assert volume.shape == (1, 4, 5, 6)
    with pytest.raises(ModelError, match="spacing"):
        to_spacing(volume, (2.0, 0.0, 2.0))
    with pytest.raises(ModelError, match="spacing"):
        to_spacing(volume, (2.0, 2.0))


def test_reading_a_volume_logs_and_warns_nothing(tmp_path, caplog, recwarn):
    """MONAI's ``LoadImage`` builds every reader it knows; its DICOM GPU decoder warned on each read (114 lines at
    one server start). Reading NIfTI and NRRD must stay silent, so that real warnings are seen."""
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "a.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(array.transpose(2, 1, 0)), str(tmp_path / "a.nrrd"))
    caplog.set_level("DEBUG")
    for name in ("a.nii.gz", "a.nrrd"):
        volume = load_image(tmp_path / name)
        assert volume.shape == (1, 4, 5, 6)
    assert not [r for r in caplog.records if r.levelno >= 30], [r.getMessage() for r in caplog.records]
    assert not [str(w.message) for w in recwarn]
