"""A MONAI bundle as the backbone, through the real server: it starts on the bundle folder, embeds the pool, serves
TESLA's Next Sample, trains on labels and segments onto the image's own grid, finding the liver by its name in the
bundle's label map (class 5 in wholeBody_ct_segmentation's) and normalising every volume by its own statistics as the
bundle's preprocessing does (NormalizeIntensityd(nonzero=True), ScaleIntensityd(-1, 1)). A bundle it cannot use stops
`slpt serve` with a reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import run_a_campaign, start_server
from tests.models.test_bundle_backbone import whole_body_like, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return whole_body_like(tmp_path_factory.mktemp("bundles") / "wholeBody_ct_segmentation")


@pytest.fixture(scope="module")
def server(served_cohort: Path, bundle: Path, tmp_path_factory):
    conf = {"backbone": str(bundle), "train_steps": "4", "roi_size": "16", "round_size": "4"}
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def test_a_bundle_backbone_embeds_selects_trains_and_segments(server, served_cohort: Path, bundle: Path):
    payload = run_a_campaign(server, served_cohort)
    assert payload["slpt"]["cascade"]["liver_class"] == 5  # found by name, not assumed to be 1
    # the bundle's per-volume NormalizeIntensityd(nonzero) + ScaleIntensityd(-1, 1)
    cascade = payload["slpt"]["cascade"]
    assert (cascade["normalization"], cascade["norm_nonzero"], cascade["norm_rescale"], cascade["hu_window"]) == (
        "volume", True, [-1.0, 1.0], None)
    assert payload["slpt"]["inherit_classes"] == [0, 5, 5]
    assert payload["backbone"]["bundle"] == str(bundle.resolve())


def test_serve_refuses_a_bundle_without_a_liver_naming_its_classes(tiny_cohort: Path, tmp_path: Path):
    from models.backbone import BackboneConfig, build_backbone

    network = build_backbone(BackboneConfig(out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0))
    definition = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
                  "strides": [2]}
    bundle = write_bundle(tmp_path / "organs", definition, network,
                          {"0": "background", "1": "spleen", "2": "kidney_left"})
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "serve", "--studies", str(tiny_cohort), "--port", "1",
         "--conf", "backbone", str(bundle)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "no class named 'liver'" in result.stderr and "1: spleen, 2: kidney_left" in result.stderr


def test_serve_refuses_a_bundle_whose_preprocessing_it_cannot_reproduce(tiny_cohort: Path, tmp_path: Path):
    percentiles = [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "@image_key", "lower": 1, "upper": 99,
                    "b_min": 0, "b_max": 1}]
    bundle = whole_body_like(tmp_path / "percentiles", intensity=percentiles)
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "serve", "--studies", str(tiny_cohort), "--port", "1",
         "--conf", "backbone", str(bundle)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert f"the bundle {bundle.resolve()} preprocesses its images in a way this server cannot match" in result.stderr
    assert "does not reproduce: ScaleIntensityRangePercentilesd" in result.stderr


def test_the_cascade_takes_the_bundles_geometry_unless_the_admin_set_it(bundle: Path):
    from app.settings import AppSettings
    from models.bundle import backbone_info

    info = backbone_info(bundle)
    cascade = AppSettings.from_conf({}).cascade(info)
    assert cascade.spacing == cascade.coarse_spacing == (2.5, 2.5, 2.5)  # the bundle's Spacingd
    assert cascade.liver_class == 5 and cascade.hu_window is None and cascade.intensity == info.intensity()
    assert cascade.intensity.per_volume
    chosen = AppSettings.from_conf({"spacing": "3", "coarse_spacing": "6"}).cascade(info)
    assert chosen.spacing == (3.0, 3.0, 3.0) and chosen.coarse_spacing == (6.0, 6.0, 6.0)
    assert AppSettings.from_conf({}).cascade(None).liver_class == 1  # no backbone yet: our defaults
