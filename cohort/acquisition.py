"""Acquisition groups of the synthetic cohort: its "scanners and protocols" (docs/design.md, "Synthetic cohort").

Real liver-CT cohorts mix contrast phases, doses and reconstructions, and a model trained on one mix
transfers poorly to another. Each :class:`AcquisitionGroup` describes one such protocol by

- its share of the cohort (unequal on purpose: 40 / 25 / 20 / 15 %),
- the z coverage of the scan (a thin-slice liver protocol covers less than an abdomen–pelvis scan; with a
  fixed ``size`` slices this is what makes the slice spacing in the NIfTI header differ by group),
- noise level (dose) and reconstruction kernel (a soft kernel blurs edges and coarsens the noise grain),
- the enhancement of every tissue in that contrast phase, in Hounsfield units (HU), and
- the lesion contrast relative to the liver: hypo-dense in portal-venous and delayed phase, hyper-dense in
  the arterial phase, low-contrast in the native (unenhanced) low-dose scan.

HU values follow textbook figures (liver ≈ 55–65 HU native, ≈ 100–120 HU portal-venous; aorta ≈ 250+ HU
arterial; fat ≈ −100 HU; air ≈ −1000 HU). Noise is the standard deviation at the generated voxel (about 2.5 mm, 10–17
mm³), five or more times the volume of a clinical 5 mm slice voxel, so it is set below the 10–15 HU (routine dose) and
15–25 HU (low dose) measured on such slices; lesion contrast and noise are compared with published ranges in
docs/design.md, "Synthetic cohort".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AcquisitionGroup:
    """One acquisition protocol. All intensities in HU, lengths in mm."""

    name: str
    frequency: float  # share of the cohort, all groups sum to 1
    z_coverage_mm: float  # cranio-caudal extent of the scan (→ slice spacing = coverage / size)
    noise_hu: float  # standard deviation of the image noise
    kernel_sigma_vox: float  # reconstruction kernel: Gaussian blur in voxels of anatomy and noise alike
    liver_hu: float
    liver_vessel_hu: float  # portal and hepatic veins inside the liver
    aorta_hu: float
    vein_hu: float  # inferior vena cava and extra-hepatic portal vein
    spleen_hu: float
    spleen_texture_hu: float  # arterial phase: heterogeneous ("zebra") spleen
    kidney_cortex_hu: float
    kidney_medulla_hu: float
    heart_hu: float
    bowel_wall_hu: float
    lesion_contrast_hu: tuple[float, float]  # range of (lesion − liver); sign = polarity
    lesion_rim_hu: float  # extra enhancement of a lesion's rim (capsule / peripheral enhancement)


# Order is the order of the slots inside one block of BLOCK_CASES cases (see cohort.synth).
GROUPS: tuple[AcquisitionGroup, ...] = (
    AcquisitionGroup(
        name="portal_venous", frequency=0.40, z_coverage_mm=330.0, noise_hu=8.0, kernel_sigma_vox=0.6,
        liver_hu=110.0, liver_vessel_hu=170.0, aorta_hu=160.0, vein_hu=160.0, spleen_hu=120.0,
        spleen_texture_hu=4.0, kidney_cortex_hu=180.0, kidney_medulla_hu=170.0, heart_hu=150.0,
        bowel_wall_hu=70.0, lesion_contrast_hu=(-75.0, -35.0), lesion_rim_hu=0.0,
    ),
    AcquisitionGroup(
        name="arterial", frequency=0.25, z_coverage_mm=240.0, noise_hu=10.0, kernel_sigma_vox=0.5,
        liver_hu=75.0, liver_vessel_hu=45.0, aorta_hu=300.0, vein_hu=110.0, spleen_hu=110.0,
        spleen_texture_hu=25.0, kidney_cortex_hu=220.0, kidney_medulla_hu=90.0, heart_hu=260.0,
        bowel_wall_hu=90.0, lesion_contrast_hu=(20.0, 60.0), lesion_rim_hu=0.0,
    ),
    AcquisitionGroup(
        name="native_low_dose", frequency=0.20, z_coverage_mm=420.0, noise_hu=14.0, kernel_sigma_vox=1.0,
        liver_hu=60.0, liver_vessel_hu=40.0, aorta_hu=42.0, vein_hu=40.0, spleen_hu=48.0,
        spleen_texture_hu=3.0, kidney_cortex_hu=32.0, kidney_medulla_hu=30.0, heart_hu=42.0,
        bowel_wall_hu=35.0, lesion_contrast_hu=(-22.0, -8.0), lesion_rim_hu=0.0,
    ),
    AcquisitionGroup(
        name="delayed", frequency=0.15, z_coverage_mm=280.0, noise_hu=12.0, kernel_sigma_vox=0.8,
        liver_hu=90.0, liver_vessel_hu=115.0, aorta_hu=110.0, vein_hu=110.0, spleen_hu=95.0,
        spleen_texture_hu=3.0, kidney_cortex_hu=140.0, kidney_medulla_hu=150.0, heart_hu=105.0,
        bowel_wall_hu=60.0, lesion_contrast_hu=(-40.0, -15.0), lesion_rim_hu=35.0,
    ),
)

# Groups are assigned in blocks of this many consecutive cases with exact counts per block
# (8 / 5 / 4 / 3), so that even a small cohort has the intended, unequal group sizes.
BLOCK_CASES = 20


def block_slots() -> list[AcquisitionGroup]:
    """The BLOCK_CASES group slots of one block, in GROUPS order (shuffled per block by the caller)."""
    slots = [group for group in GROUPS for _ in range(round(group.frequency * BLOCK_CASES))]
    if len(slots) != BLOCK_CASES:  # guards edits to the frequencies above
        raise AssertionError(f"group frequencies give {len(slots)} slots, expected {BLOCK_CASES}")
    return slots

