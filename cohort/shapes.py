"""Geometry primitives on a CT voxel grid, in patient millimetres.

Coordinates: ``lat`` + towards the patient's left, ``post`` + posterior, ``sup`` + superior. A
:class:`Grid` stores them as broadcastable axis arrays (X, 1, 1), (1, Y, 1), (1, 1, Z) so that shape
functions evaluate on the full (X, Y, Z) volume, or on a sub-volume (``box``) to save time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]  # index sub-volume of a grid
GAUSSIAN_TRUNCATE = 3.0  # kernel radius in sigmas; shorter than scipy's 4.0, same look, faster


@dataclass(frozen=True)
class Grid:
    """Voxel grid: patient-mm coordinate of the voxel centres along each axis.

    ``spacing`` is (dx, dy, dz) in mm; ``affine`` maps voxel indices to RAS mm (the NIfTI affine).
    """

    lat: np.ndarray  # (X, 1, 1) float32
    post: np.ndarray  # (1, Y, 1) float32
    sup: np.ndarray  # (1, 1, Z) float32
    spacing: tuple[float, float, float]
    affine: np.ndarray  # (4, 4) float64

    @classmethod
    def axial(
        cls, size: int, pixel_mm: float, slice_mm: float, top_sup_mm: float,
        shape: tuple[int, int, int] | None = None,
    ) -> Grid:
        """A ``size``³ grid (or one of ``shape`` = (X, Y, Z) voxels) centred on lat = post = 0 whose top slice
        lies at ``top_sup_mm``.

        Voxel axes i → patient left, j → posterior, k → superior: RAS diagonal (−dx, −dy, +dz), the
        orientation of an axial DICOM series converted to NIfTI.
        """
        nx, ny, nz = (size, size, size) if shape is None else (int(n) for n in shape)
        lat = (np.arange(nx, dtype=np.float64) - (nx - 1) / 2) * pixel_mm
        post = (np.arange(ny, dtype=np.float64) - (ny - 1) / 2) * pixel_mm
        sup = top_sup_mm - (nz - 1 - np.arange(nz, dtype=np.float64)) * slice_mm
        affine = np.array(
            [
                [-pixel_mm, 0, 0, -lat[0]],
                [0, -pixel_mm, 0, -post[0]],
                [0, 0, slice_mm, sup[0]],
                [0, 0, 0, 1],
            ]
        )
        return cls(
            lat=lat.astype(np.float32).reshape(-1, 1, 1),
            post=post.astype(np.float32).reshape(1, -1, 1),
            sup=sup.astype(np.float32).reshape(1, 1, -1),
            spacing=(pixel_mm, pixel_mm, slice_mm),
            affine=affine,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.lat.shape[0], self.post.shape[1], self.sup.shape[2])

    def position(self, index: tuple[int, int, int]) -> np.ndarray:
        """Patient-mm position (lat, post, sup), shape (3,), of a voxel index."""
        i, j, k = index
        return np.array([self.lat[i, 0, 0], self.post[0, j, 0], self.sup[0, 0, k]], dtype=np.float64)

    def box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> Box:
        """Index slices of the voxels whose centres lie in the patient-mm box [low, high] (may be empty)."""
        axes = (self.lat[:, 0, 0], self.post[0, :, 0], self.sup[0, 0, :])
        return tuple(
            slice(int(np.searchsorted(a, lo, "left")), int(np.searchsorted(a, hi, "right")))
            for a, lo, hi in zip(axes, low_mm, high_mm)
        )

    def coordinates(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lat, post, sup) broadcastable coordinate arrays of the whole grid or of ``box``."""
        if box is None:
            return self.lat, self.post, self.sup
        return self.lat[box[0]], self.post[:, box[1]], self.sup[:, :, box[2]]


def gaussian_gain(sigmas_vox: list[float]) -> float:
    """Variance of unit white noise after ``gaussian_filter(sigmas_vox)``: Π over axes of Σ weights²."""
    gain = 1.0
    for sigma in sigmas_vox:
        if sigma > 0:
            radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
            weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
            gain *= float(np.sum((weights / weights.sum()) ** 2))
    return gain


def smooth_field(rng: np.random.Generator, grid: Grid, sigma_mm: float) -> np.ndarray:
    """Gaussian random field (X, Y, Z) float32, correlation length ``sigma_mm``, unit variance.

    Normalised by the filter's exact variance gain (not the sample std), so a field whose correlation
    length exceeds the field of view stays nearly flat instead of being blown up.
    """
    sigmas = [sigma_mm / s for s in grid.spacing]
    white = rng.standard_normal(grid.shape, dtype=np.float32)
    field = ndimage.gaussian_filter(white, sigmas, truncate=GAUSSIAN_TRUNCATE)
    return field / np.float32(math.sqrt(gaussian_gain(sigmas)))


def ellipsoid_radius(
    grid: Grid,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    angle: float = 0.0,
    box: Box | None = None,
) -> np.ndarray:
    """Normalised radius, < 1 inside an ellipsoid (semi-axes in mm) turned ``angle`` rad about sup.

    Shape (X, Y, Z), or that of the sub-volume ``box`` when given.
    """
    lat, post, sup = grid.coordinates(box)
    d_lat = lat - np.float32(centre[0])
    d_post = post - np.float32(centre[1])
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (cos * d_lat + sin * d_post) / np.float32(semi[0])
    v = (cos * d_post - sin * d_lat) / np.float32(semi[1])
    w = (sup - np.float32(centre[2])) / np.float32(semi[2])
    return np.sqrt(u * u + v * v + w * w)


def ellipsoid(
    grid: Grid, centre: tuple[float, float, float], semi: tuple[float, float, float], angle: float = 0.0
) -> np.ndarray:
    """Boolean (X, Y, Z) mask of an ellipsoid, evaluated only in its bounding box."""
    reach = max(semi)
    box = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = ellipsoid_radius(grid, centre, semi, angle, box) < 1
    return mask


def ellipse_radius(grid: Grid, centre: tuple[float, float], semi: tuple[float, float]) -> np.ndarray:
    """Normalised radius (X, Y, 1) of an axial ellipse, i.e. of a cylinder along sup."""
    return np.hypot(
        (grid.lat - np.float32(centre[0])) / np.float32(semi[0]),
        (grid.post - np.float32(centre[1])) / np.float32(semi[1]),
    )


def tube(grid: Grid, start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Boolean (X, Y, Z) capsule of ``radius`` mm around the segment start→end (patient mm, shape (3,))."""
    box = grid.box(np.minimum(start, end) - radius, np.maximum(start, end) + radius)
    lat, post, sup = grid.coordinates(box)
    axis = (end - start).astype(np.float32)
    length2 = np.float32(max(float(axis @ axis), 1e-6))
    d = (lat - np.float32(start[0]), post - np.float32(start[1]), sup - np.float32(start[2]))
    t = np.clip((d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2]) / length2, 0.0, 1.0)
    dist2 = (d[0] - t * axis[0]) ** 2 + (d[1] - t * axis[1]) ** 2 + (d[2] - t * axis[2]) ** 2
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = dist2 < np.float32(radius * radius)
    return mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (an empty mask stays empty)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def random_voxel(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int, int]:
    """A uniformly drawn voxel index of a non-empty boolean mask."""
    flat = np.flatnonzero(mask)
    return tuple(int(v) for v in np.unravel_index(flat[rng.integers(flat.size)], mask.shape))


def depth_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance in mm (shape of ``mask``) from each mask voxel to the nearest background voxel.

    On grids of 32+ voxels it is computed on every second voxel (8× cheaper) and repeated back to
    full resolution: callers use it to place things, not to measure.
    """
    if min(mask.shape) < 32:
        return ndimage.distance_transform_edt(mask, sampling=spacing)
    coarse = ndimage.distance_transform_edt(mask[::2, ::2, ::2], sampling=[2 * s for s in spacing])
    full = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return full[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
