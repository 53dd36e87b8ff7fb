"""One synthetic abdominal CT case: anatomy in patient millimetres, HU painting, scanner model.

Anatomy is drawn in patient mm (see :mod:`cohort.shapes`; ``sup`` = 0 at the level of the liver's centre)
and sampled on the voxel grid that the NIfTI affine describes, so header geometry and content agree:
a smaller pixel spacing shows a larger body, a longer z coverage shows more of the pelvis.

The phantom holds a body (subcutaneous fat, muscle wall, lower ribs); lung bases and heart above two
diaphragm domes; a liver made of two deformed ellipsoids (right and left lobe) with portal and hepatic
veins and a gallbladder; spleen; kidneys (cortex, medulla, sinus fat); aorta, inferior vena cava,
portal vein; spine with discs and canal; paraspinal and psoas muscles; bowel loops with gas — the
distractors a tumour model must learn to ignore. Lesions (0–5) are painted inside the liver. An upstream
(pre-training) case instead gets lesions of the spleen and kidneys (``organ_lesions``), labelled as their own class,
as real task-agnostic CT models have (VISTA3D's classes include kidney and pancreatic lesions): the frozen features
learn what a lesion looks like while liver tumours stay a new downstream task (docs/design.md, "Synthetic cohort").

Per-case variation: body habitus and position, organ size/shape/position, fatty liver (12 %),
gallbladder present (75 %), lesion count, size, shape, texture and contrast. Per-group variation
(phase, noise, kernel, coverage) comes from :class:`cohort.acquisition.AcquisitionGroup`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cohort.acquisition import AcquisitionGroup
from cohort.shapes import (
    GAUSSIAN_TRUNCATE,
    Grid,
    depth_mm,
    ellipse_radius,
    ellipsoid,
    ellipsoid_radius,
    gaussian_gain,
    largest_component,
    random_voxel,
    smooth_field,
    tube,
)

MAX_LESIONS = 5
LESION_COUNT_P = (0.35, 0.25, 0.18, 0.12, 0.10)  # probability of 1..MAX_LESIONS lesions
LIVER_LESION_RADIUS_MM = (5.0, 35.0)
# Spleen and kidneys are 3-6 cm across: their lesions (cysts, metastases, small renal tumours) are smaller.
ORGAN_LESION_COUNT_P = (0.45, 0.35, 0.20)  # probability of 1..3 lesions in an upstream case
ORGAN_LESION_RADIUS_MM = (4.0, 18.0)
HU_RANGE = (-1024, 3071)  # 12-bit CT

# Fixed tissue values in HU (contrast-dependent ones live in the acquisition group).
AIR_HU, LUNG_HU, GAS_HU = -1000.0, -850.0, -900.0
FAT_HU, VISCERAL_FAT_HU, SINUS_FAT_HU = -100.0, -90.0, -80.0
MUSCLE_HU, BILE_HU, FLUID_HU, CSF_HU = 50.0, 8.0, 15.0, 15.0
BONE_CORTEX_HU, RIB_HU, BONE_CANCELLOUS_HU, DISC_HU = 650.0, 400.0, 220.0, 85.0


@dataclass(frozen=True)
class Phantom:
    """One rendered case: ``image`` (X, Y, Z) int16 HU, boolean (X, Y, Z) organ masks, its grid and group.

    ``liver`` includes intra-hepatic vessels and lesions; ``tumour`` ⊂ ``liver``; ``organ_lesion`` ⊂ spleen ∪ kidney.
    """

    image: np.ndarray
    liver: np.ndarray
    tumour: np.ndarray
    spleen: np.ndarray
    kidney: np.ndarray
    organ_lesion: np.ndarray
    grid: Grid
    group: str

    def label_map(self, upstream: bool) -> np.ndarray:
        """uint8 (X, Y, Z): 0 bg, 1 liver, 2 tumour; or, ``upstream``, 1 liver (with its tumours, if any), 2 spleen,
        3 kidney, 4 lesion (of the spleen or a kidney)."""
        labels = np.zeros(self.image.shape, dtype=np.uint8)
        if upstream:
            labels[self.kidney] = 3
            labels[self.spleen] = 2
            labels[self.liver] = 1
            labels[self.organ_lesion] = 4
        else:
            labels[self.liver] = 1
            labels[self.tumour] = 2
        return labels


def render_case(
    rng: np.random.Generator, group: AcquisitionGroup, size: int, with_tumour: bool,
    shape: tuple[int, int, int] | None = None, spacing: tuple[float, float, float] | None = None,
    organ_lesions: bool = False,
) -> Phantom:
    """Draw one case of acquisition ``group`` on a ``size``³ grid; 1–5 liver lesions if ``with_tumour``, 1–3 lesions
    of the spleen and kidneys if ``organ_lesions``.

    ``shape`` (X, Y, Z) and ``spacing`` (dx, dy, dz mm, dx = dy) render it on another grid instead (see
    :func:`draw_grid`). The random fields are drawn per voxel, so on another grid the same ``rng`` gives
    another case of the same kind (same group, same lesion plan), not the cubic case resampled.
    """
    return _CaseBuilder(rng, group, size, shape, spacing).build(with_tumour, organ_lesions)


def draw_grid(
    rng: np.random.Generator, group: AcquisitionGroup, size: int,
    shape: tuple[int, int, int] | None = None, spacing: tuple[float, float, float] | None = None,
) -> Grid:
    """Scan geometry: a 512² matrix at 0.7–0.9 mm resampled to ``size`` pixels; z coverage by group.

    The top slice lies 110–150 mm above the liver's centre, over the diaphragm, as in a liver protocol.
    A non-cubic ``shape`` (X, Y, Z) resamples the same scan to X pixels across and Z slices (``size`` is then
    unused); ``spacing`` (dx, dy, dz) mm, with square pixels dx = dy, replaces the drawn pixel and slice
    spacing. The same three numbers are drawn from ``rng`` either way (a cubic ``shape`` without ``spacing``
    gives exactly the default grid).

    Raises:
        ValueError: a ``shape`` that is not 3 positive sizes, or a ``spacing`` that is not 3 positive mm
            with dx = dy.
    """
    pixel_draw = rng.uniform(0.7, 0.9)
    slice_draw = rng.uniform(0.93, 1.07)
    top_sup_mm = rng.uniform(110.0, 150.0)
    if shape is None and spacing is None:
        pixel_mm = 512 * pixel_draw / size
        slice_mm = group.z_coverage_mm * slice_draw / size
        return Grid.axial(size, pixel_mm, slice_mm, top_sup_mm=top_sup_mm)
    grid_shape = (size, size, size) if shape is None else tuple(int(n) for n in shape)
    if len(grid_shape) != 3 or min(grid_shape) < 1:
        raise ValueError(f"shape needs 3 positive sizes (X, Y, Z), got {shape!r}")
    if spacing is None:
        pixel_mm = 512 * pixel_draw / grid_shape[0]
        slice_mm = group.z_coverage_mm * slice_draw / grid_shape[2]
    else:
        if len(spacing) != 3 or min(spacing) <= 0 or spacing[0] != spacing[1]:
            raise ValueError(f"spacing needs 3 positive mm with square pixels (dx = dy), got {spacing!r}")
        pixel_mm, slice_mm = float(spacing[0]), float(spacing[2])
    return Grid.axial(size, pixel_mm, slice_mm, top_sup_mm=top_sup_mm, shape=grid_shape)


class _CaseBuilder:
    """Draws one case. Organ masks are *claimed* in priority order, so they never overlap.

    Methods run in :meth:`build` order; each stores the masks (``self.masks``, (X, Y, Z) bool) and
    landmarks (patient mm) that later ones need.
    """

    def __init__(
        self, rng: np.random.Generator, group: AcquisitionGroup, size: int,
        shape: tuple[int, int, int] | None = None, spacing: tuple[float, float, float] | None = None,
    ) -> None:
        self.rng = rng
        self.group = group
        self.grid = draw_grid(rng, group, size, shape, spacing)
        self.occupied = np.zeros(self.grid.shape, dtype=bool)
        self.masks: dict[str, np.ndarray] = {}
        self.depths: dict[str, np.ndarray] = {}  # organ name -> depth below its surface (mm), for lesion centres
        self.outline_field = smooth_field(rng, self.grid, 25.0)  # organ outline deformation
        self.texture = smooth_field(rng, self.grid, 7.0)  # parenchyma, lesion heterogeneity, bowel loops

    def claim(self, name: str, mask: np.ndarray) -> np.ndarray:
        """Give the still unclaimed part of ``mask`` to tissue ``name`` (added to an existing one)."""
        mask = np.broadcast_to(mask, self.grid.shape) & ~self.occupied
        self.occupied |= mask
        self.masks[name] = self.masks[name] | mask if name in self.masks else mask
        return mask

    def build(self, with_tumour: bool, organ_lesions: bool = False) -> Phantom:
        self.body()
        self.spine_and_muscles()
        self.great_vessels()
        self.liver_lobes()
        self.thorax()
        self.kidneys()
        self.spleen()
        self.gallbladder()
        self.liver()
        self.liver_vessels()
        self.bowel()
        hu, liver_hu = self.paint()
        none = np.zeros(self.grid.shape, dtype=bool)
        tumour = self.lesions(hu, liver_hu) if with_tumour else none
        organ_lesion = self.organ_lesions(hu) if organ_lesions else none
        self.paint_over_liver(hu)
        return Phantom(
            image=_acquire(self.rng, self.group, hu),
            liver=self.masks["liver"],
            tumour=tumour,
            spleen=self.masks["spleen"],
            kidney=self.masks["kidney"],
            organ_lesion=organ_lesion,
            grid=self.grid,
            group=self.group.name,
        )

    # ---- anatomy ------------------------------------------------------------------------------------

    def body(self) -> None:
        """Axial super-ellipse, deformed and slightly wider caudally: fat layer, muscle wall, cavity."""
        rng, grid = self.rng, self.grid
        self.body_lat, self.body_post = rng.uniform(-12, 12), rng.uniform(-10, 12)
        self.half_width, self.half_depth = rng.uniform(135, 175), rng.uniform(95, 130)
        exponent = rng.uniform(2.0, 2.6)
        self.phi = np.arctan2(grid.post - self.body_post, grid.lat - self.body_lat)  # (X, Y, 1)
        outline = (
            1
            + rng.uniform(0, 0.04) * np.cos(2 * self.phi + rng.uniform(0, 2 * math.pi))
            + rng.uniform(0, 0.03) * np.cos(3 * self.phi + rng.uniform(0, 2 * math.pi))
        ) * (1 + rng.uniform(0.0, 0.1) * np.clip(-grid.sup / 300, -0.3, 1.0))
        radius = (
            np.abs((grid.lat - self.body_lat) / self.half_width) ** exponent
            + np.abs((grid.post - self.body_post) / self.half_depth) ** exponent
        ) ** (1 / exponent)
        mean_half_axis = (self.half_width + self.half_depth) / 2
        fat_mm = rng.uniform(8, 35)
        self.masks["body"] = radius < outline
        self.masks["inside_fat"] = radius < outline - fat_mm / mean_half_axis
        self.masks["cavity"] = radius < outline - (fat_mm + 12) / mean_half_axis

    def spine_and_muscles(self) -> None:
        """Vertebra (cortex, cancellous bone, discs), canal and arch; paraspinal and psoas muscles."""
        rng, grid = self.rng, self.grid
        self.vertebra_r = rng.uniform(15, 20)
        self.spine_post = self.body_post + self.half_depth * rng.uniform(0.35, 0.45)
        vertebra = ellipse_radius(grid, (self.body_lat, self.spine_post), (self.vertebra_r, self.vertebra_r))
        between_discs = ((grid.sup - rng.uniform(0, 32)) / 32.0) % 1.0 >= 0.2
        canal_post = self.spine_post + self.vertebra_r + 9
        canal = ellipse_radius(grid, (self.body_lat, canal_post), (8.0, 8.0))
        spinous = (np.abs(grid.lat - self.body_lat) < 4) & (grid.post > canal_post + 8) & (grid.post < canal_post + 35)
        shell = (vertebra < 1) & (vertebra > 1 - 2.5 / self.vertebra_r)
        self.claim("bone_cortex", shell | ((canal >= 1) & (canal < 1.6)) | spinous)
        self.claim("bone_cancellous", (vertebra < 1) & between_discs)
        self.claim("disc", vertebra < 1)
        self.claim("canal", canal < 1)
        psoas_growth = np.clip((-grid.sup - 10) / 150, 0, 1)  # psoas thickens caudally
        for side in (-1, 1):
            paraspinal = ellipse_radius(grid, (self.body_lat + side * 32, canal_post + 12), (26, 20))
            self.claim("muscle", (paraspinal < 1) & self.masks["body"])
            psoas = ellipse_radius(grid, (self.body_lat + side * (self.vertebra_r + 14), self.spine_post - 3), (1, 1))
            self.claim("muscle", (psoas < 3 + 16 * psoas_growth) & (psoas_growth > 0) & self.masks["cavity"])

    def great_vessels(self) -> None:
        """Aorta left of the midline, inferior vena cava right, both in front of the spine."""
        rng, grid = self.rng, self.grid
        front = self.spine_post - self.vertebra_r
        aorta_r = rng.uniform(9, 13)
        aorta = (self.body_lat + rng.uniform(10, 22), front - rng.uniform(9, 14))
        self.claim("aorta", ellipse_radius(grid, aorta, (aorta_r, aorta_r)) < 1)
        ivc_r = rng.uniform(9, 13)
        self.ivc = (self.body_lat - rng.uniform(18, 28), front - rng.uniform(4, 10))
        self.claim("veins", ellipse_radius(grid, self.ivc, (ivc_r, ivc_r)) < 1)

    def liver_lobes(self) -> None:
        """Centres and semi-axes (mm) of the right lobe and of the left lobe crossing the midline."""
        rng = self.rng
        scale = rng.uniform(0.85, 1.15)
        self.right_lobe = (
            self.body_lat - self.half_width * rng.uniform(0.35, 0.5),
            self.body_post - self.half_depth * rng.uniform(0.0, 0.15),
            rng.uniform(-10, 10),
        )
        self.right_semi = (rng.uniform(60, 80) * scale, rng.uniform(55, 72) * scale, rng.uniform(65, 85) * scale)
        self.left_lobe = (
            self.right_lobe[0] + rng.uniform(75, 100) * scale,
            self.body_post - self.half_depth * rng.uniform(0.3, 0.45),
            self.right_lobe[2] + rng.uniform(10, 30),
        )
        self.left_semi = (rng.uniform(50, 70) * scale, rng.uniform(25, 40) * scale, rng.uniform(35, 50) * scale)

    def thorax(self) -> None:
        """Lung bases above two diaphragm domes (the right one on the liver), heart between them."""
        rng, grid = self.rng, self.grid
        self.dome_right = self.right_lobe[2] + self.right_semi[2] * rng.uniform(0.7, 0.85)
        dome_left = self.dome_right - rng.uniform(10, 25)
        curvature = np.float32(1 / rng.uniform(150, 250))

        def dome(apex_lat: float, apex_post: float, apex_sup: float) -> np.ndarray:  # (X, Y, 1) height in mm
            return apex_sup + curvature * ((grid.lat - apex_lat) ** 2 + (grid.post - apex_post) ** 2)

        right = dome(self.right_lobe[0], self.right_lobe[1], self.dome_right)
        left = dome(self.body_lat + self.half_width * 0.45, self.body_post, dome_left)
        chest = self.masks["cavity"] & (grid.sup > np.minimum(right, left))
        heart_centre = (self.body_lat + 25, self.body_post - self.half_depth * 0.25, dome_left + 45)
        self.claim("heart", chest & ellipsoid(grid, heart_centre, (65, 55, 55)))
        self.claim("lung", chest)

    def kidneys(self) -> None:
        """Two kidneys (the right one lower), hilum turned anteromedially; cortex ⊂ kidney; sinus fat."""
        rng, grid = self.rng, self.grid
        cortex = np.zeros(grid.shape, dtype=bool)
        for side in (-1, 1):
            centre = (
                self.body_lat + side * rng.uniform(62, 80),
                self.spine_post - rng.uniform(0, 10),
                -rng.uniform(45, 75) - (rng.uniform(5, 20) if side < 0 else 0.0),
            )
            semi = (rng.uniform(22, 30), rng.uniform(20, 27), rng.uniform(45, 60))
            angle = side * rng.uniform(0.2, 0.5)
            sinus_centre = (centre[0] - side * semi[0] * 0.55, centre[1] - semi[1] * 0.3, centre[2])
            self.claim("sinus", ellipsoid(grid, sinus_centre, (semi[0] * 0.45, semi[1] * 0.45, semi[2] * 0.55), angle))
            kidney = self.claim("kidney", ellipsoid(grid, centre, semi, angle))
            medulla = ellipsoid(grid, centre, tuple(0.72 * s for s in semi), angle)
            cortex |= kidney & ~medulla
        self.masks["kidney_cortex"] = cortex

    def spleen(self) -> None:
        """Oblique deformed ellipsoid, posterolateral on the left."""
        rng, grid = self.rng, self.grid
        scale = rng.uniform(0.85, 1.2)
        centre = (
            self.body_lat + self.half_width * rng.uniform(0.45, 0.6),
            self.body_post + self.half_depth * rng.uniform(0.1, 0.3),
            rng.uniform(0, 30),
        )
        semi = tuple(v * scale for v in (rng.uniform(20, 30), rng.uniform(40, 55), rng.uniform(40, 55)))
        radius = ellipsoid_radius(grid, centre, semi, rng.uniform(0.3, 0.8))
        # The liver uses the same outline field; shifting it half a volume decorrelates the two organs.
        deformation = 0.12 * np.roll(self.outline_field, grid.shape[0] // 2, axis=0)
        self.claim("spleen", largest_component((radius + deformation < 1) & self.masks["cavity"] & ~self.occupied))

    def gallbladder(self) -> None:
        """Bile-filled pear under the right lobe (75 % of cases; absent after cholecystectomy)."""
        rng = self.rng
        if rng.random() >= 0.75:
            self.masks["gallbladder"] = np.zeros(self.grid.shape, dtype=bool)
            return
        centre = (
            self.right_lobe[0] + rng.uniform(20, 40),
            self.right_lobe[1] - self.right_semi[1] * rng.uniform(0.4, 0.6),
            self.right_lobe[2] - self.right_semi[2] * rng.uniform(0.35, 0.55),
        )
        semi = (rng.uniform(12, 18), rng.uniform(14, 22), rng.uniform(25, 40))
        self.claim("gallbladder", ellipsoid(self.grid, centre, semi, rng.uniform(-0.5, 0.5)) & self.masks["cavity"])

    def liver(self) -> None:
        """Union of both lobes, outline deformed by a smooth field, what other organs left, one blob."""
        rng, grid = self.rng, self.grid
        lobes = np.minimum(
            ellipsoid_radius(grid, self.right_lobe, self.right_semi, rng.uniform(-0.25, 0.25)),
            ellipsoid_radius(grid, self.left_lobe, self.left_semi, rng.uniform(-0.3, 0.3)),
        )
        deformed = lobes + rng.uniform(0.08, 0.18) * self.outline_field
        liver = largest_component((deformed < 1) & self.masks["cavity"] & ~self.occupied)
        if not liver.any():  # coarse grids, in theory: keep the free voxel deepest inside the lobes
            deepest = np.argmin(np.where(self.occupied, np.inf, deformed))
            liver[np.unravel_index(deepest, grid.shape)] = True
        self.claim("liver", liver)

    def liver_vessels(self) -> None:
        """Portal branches from a hilum and hepatic veins towards the IVC (labelled liver, as in LiTS);
        the extra-hepatic portal vein runs down from the hilum."""
        rng, grid = self.rng, self.grid
        liver = self.masks["liver"]
        hilum = grid.position(random_voxel(rng, liver))
        vessels = np.zeros(grid.shape, dtype=bool)
        for _ in range(rng.integers(3, 7)):
            vessels |= tube(grid, hilum, grid.position(random_voxel(rng, liver)), rng.uniform(3, 6))
        ivc_top = np.array([self.ivc[0], self.ivc[1], self.dome_right - 10])
        for _ in range(3):
            vessels |= tube(grid, ivc_top, grid.position(random_voxel(rng, liver)), rng.uniform(3, 5.5))
        self.masks["liver_vessels"] = vessels & liver
        portal_end = np.array(
            [self.body_lat + rng.uniform(-5, 15), self.spine_post - self.vertebra_r - 35, hilum[2] - 80]
        )
        self.claim("veins", tube(grid, hilum, portal_end, rng.uniform(6, 8)) & self.masks["cavity"])

    def bowel(self) -> None:
        """Bowel loops below the liver's upper half, gas in the middle of the loops, fat between.

        The loops reuse the texture field: its blobs have the loops' scale, and no organ lies here.
        """
        rng = self.rng
        below = self.grid.sup < self.right_lobe[2] + rng.uniform(-10, 30)
        loops = self.claim("bowel", self.masks["cavity"] & below & (self.texture > rng.uniform(-0.4, 0.6)))
        self.masks["gas"] = loops & (self.texture > rng.uniform(1.4, 2.0))

    # ---- intensities --------------------------------------------------------------------------------

    def paint(self) -> tuple[np.ndarray, float]:
        """HU volume (X, Y, Z) float32 of everything up to the liver; returns it and the liver's HU."""
        rng, group, masks, texture = self.rng, self.group, self.masks, self.texture
        hu = np.full(self.grid.shape, AIR_HU, dtype=np.float32)
        hu[masks["body"]] = FAT_HU
        hu[masks["inside_fat"]] = MUSCLE_HU  # abdominal wall, the cavity is carved out next
        hu[masks["cavity"]] = VISCERAL_FAT_HU
        hu += np.where(masks["body"], 6 * texture, 0)
        # Lower ribs: oblique bands through the muscle wall around the upper abdomen.
        wall = masks["inside_fat"] & ~masks["cavity"]
        rib_pattern = (self.phi * 8 / (2 * math.pi) + self.grid.sup / 28.0) % 1.0 < 0.15
        lateral = np.abs(self.grid.lat - self.body_lat) > 40
        hu[wall & rib_pattern & lateral & (self.grid.sup > self.right_lobe[2] - 70)] = RIB_HU
        for name, value in (
            ("lung", LUNG_HU),
            ("heart", group.heart_hu),
            ("kidney", group.kidney_medulla_hu),
            ("kidney_cortex", group.kidney_cortex_hu),
            ("sinus", SINUS_FAT_HU),
            ("gallbladder", BILE_HU),
        ):
            hu[masks[name]] = value
        hu[masks["lung"]] += 25 * texture[masks["lung"]]
        hu[masks["bowel"]] = group.bowel_wall_hu + 12 * texture[masks["bowel"]]
        hu[masks["gas"]] = GAS_HU
        hu[masks["spleen"]] = group.spleen_hu + group.spleen_texture_hu * texture[masks["spleen"]]
        liver_hu = group.liver_hu - (rng.uniform(20, 45) if rng.random() < 0.12 else 0.0)  # fatty liver
        hu[masks["liver"]] = liver_hu + 5 * texture[masks["liver"]]
        hu[masks["liver_vessels"]] = group.liver_vessel_hu
        return hu, liver_hu

    def paint_over_liver(self, hu: np.ndarray) -> None:
        """Vessels, muscle and bone: structures claimed before the liver, painted last, in place."""
        group, masks, texture = self.group, self.masks, self.texture
        hu[masks["aorta"]] = group.aorta_hu
        hu[masks["veins"]] = group.vein_hu
        hu[masks["muscle"]] = MUSCLE_HU + 5 * texture[masks["muscle"]]
        hu[masks["bone_cortex"]] = BONE_CORTEX_HU
        hu[masks["bone_cancellous"]] = BONE_CANCELLOUS_HU
        hu[masks["disc"]] = DISC_HU
        hu[masks["canal"]] = CSF_HU

    def lesions(self, hu: np.ndarray, liver_hu: float) -> np.ndarray:
        """Paint 1–MAX_LESIONS lesions into ``hu`` in place; return the tumour mask (X, Y, Z) ⊂ liver.

        Each lesion: radius 5–35 mm (log-uniform; semi-axes of at least 0.9 voxel so it survives coarse
        grids), random axis ratios and orientation, an outline roughened by the texture field, contrast
        from the group's range, internal heterogeneity, a necrotic core (half the lesions over 15 mm)
        and the group's rim enhancement. Centres are uniform among liver voxels at least half a radius
        deep (or the deepest available), so lesions lie anywhere in the liver, not only at its edge.
        """
        tumour = np.zeros(self.grid.shape, dtype=bool)
        for _ in range(1 + int(self.rng.choice(MAX_LESIONS, p=LESION_COUNT_P))):
            tumour |= self._lesion(hu, "liver", liver_hu, LIVER_LESION_RADIUS_MM)
        return tumour

    def organ_lesions(self, hu: np.ndarray) -> np.ndarray:
        """Paint 1–3 lesions into the spleen or a kidney (each lesion's organ drawn at random), in place; return their
        mask. Contrast is the group's liver-lesion contrast relative to the organ's own painted HU: hypo-dense in the
        venous phases, hyper-dense in the arterial one, as liver lesions are."""
        mask = np.zeros(self.grid.shape, dtype=bool)
        for _ in range(1 + int(self.rng.choice(len(ORGAN_LESION_COUNT_P), p=ORGAN_LESION_COUNT_P))):
            organ = "spleen" if self.rng.random() < 0.5 else "kidney"
            if self.masks[organ].any():
                mask |= self._lesion(hu, organ, None, ORGAN_LESION_RADIUS_MM)
        return mask

    def _lesion(
        self, hu: np.ndarray, organ_name: str, organ_hu: float | None, radius_mm: tuple[float, float],
    ) -> np.ndarray:
        """Paint one lesion inside the mask ``organ_name``, in place; return its mask (X, Y, Z). ``organ_hu`` None:
        the contrast is relative to the HU already painted there."""
        rng, grid, organ = self.rng, self.grid, self.masks[organ_name]
        if organ_name not in self.depths:
            self.depths[organ_name] = depth_mm(organ, grid.spacing)
        depth = self.depths[organ_name]
        radius = math.exp(rng.uniform(math.log(radius_mm[0]), math.log(radius_mm[1])))
        semi = tuple(max(radius * rng.uniform(0.75, 1.25), 0.9 * spacing) for spacing in grid.spacing)
        wanted_depth = min(rng.uniform(0.5, 1.0) * radius, 0.6 * float(depth.max()))
        centre_index = random_voxel(rng, organ & (depth >= wanted_depth))
        centre = grid.position(centre_index) + rng.uniform(-0.5, 0.5, 3) * np.array(grid.spacing)
        # Roughening scales the radius by >= 0.6, so the lesion stays within 1/0.6 of its semi-axes.
        reach = max(semi) / 0.6
        box = grid.box(centre - reach, centre + reach)
        texture = self.texture[box]
        radial = ellipsoid_radius(grid, tuple(centre), semi, rng.uniform(0, math.pi), box)
        radial *= np.maximum(1 + rng.uniform(0.0, 0.25) * texture, 0.6)
        lesion = (radial < 1) & organ[box]
        lesion[tuple(c - b.start for c, b in zip(centre_index, box))] = True  # sub-voxel lesions too
        base = hu[box] if organ_hu is None else organ_hu
        values = base + rng.uniform(*self.group.lesion_contrast_hu) * (1 + rng.uniform(0.1, 0.4) * texture)
        if radius > 15 and rng.random() < 0.5:
            values = np.where(radial < rng.uniform(0.3, 0.6), FLUID_HU + 5 * texture, values)
        values = np.where(radial > 0.78, values + self.group.lesion_rim_hu, values)
        hu[box][lesion] = values[lesion]
        mask = np.zeros(grid.shape, dtype=bool)
        mask[box] = lesion
        return mask


def _acquire(rng: np.random.Generator, group: AcquisitionGroup, hu: np.ndarray) -> np.ndarray:
    """Scanner model, (X, Y, Z) float HU → int16 HU: quantum noise, then the reconstruction kernel.

    White noise is added before the kernel's Gaussian blur, so one filter both softens edges and gives
    the noise its grain, as a reconstruction kernel does; the noise is pre-scaled by the filter's
    variance gain so that it ends at the group's level (±25 % per case).
    """
    sigma = group.kernel_sigma_vox
    noise_sd = group.noise_hu * rng.uniform(0.8, 1.25) / math.sqrt(gaussian_gain([sigma] * 3))
    noisy = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd)
    image = ndimage.gaussian_filter(noisy, sigma, truncate=GAUSSIAN_TRUNCATE)
    return np.clip(np.rint(image), *HU_RANGE).astype(np.int16)
