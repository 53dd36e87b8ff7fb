"""A trained nnU-Net v2 model folder as the backbone, through the real server: it starts on the result folder, embeds
the pool, serves TESLA's Next Sample, trains on labels and segments onto the image's own grid, with the plans'
CTNormalization and the liver found by name in dataset.json. A folder it cannot use stops `slpt serve` with the file and
the problem, before anything is served."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import run_a_campaign, start_server
from tests.models.nnunet_model import make_nnunet_model
from tests.models.test_nnunet import broken


@pytest.fixture(scope="module")
def nnunet_model(tiny_cohort: Path, tmp_path_factory) -> Path:
    # dataset.json puts the liver at 2: found by name, not assumed to be 1.
    return make_nnunet_model(tmp_path_factory.mktemp("nnunet"), tiny_cohort, "ResidualEncoderUNet",
                             labels={"background": 0, "tumor": 1, "liver": 2})


@pytest.fixture(scope="module")
def server(served_cohort: Path, nnunet_model: Path, tmp_path_factory):
    conf = {"backbone": str(nnunet_model), "train_steps": "4", "roi_size": "16", "round_size": "4"}
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def test_an_nnunet_backbone_embeds_selects_trains_and_segments(server, served_cohort: Path, nnunet_model: Path):
    payload = run_a_campaign(server, served_cohort)
    cascade = payload["slpt"]["cascade"]
    assert cascade["liver_class"] == 2
    assert payload["slpt"]["inherit_classes"] == [0, 2, 1]  # background, liver, the upstream tumour
    assert cascade["normalization"] == "zscore" and cascade["norm_std"] > 0  # the plans' CTNormalization
    assert payload["backbone"]["name"] == "resencunet"
    assert payload["backbone"]["bundle"] == str(nnunet_model / "fold_0")


def test_the_cascade_takes_the_plans_geometry_and_normalisation(nnunet_model: Path):
    from app.settings import AppSettings
    from models.bundle import backbone_info

    plans = json.loads((nnunet_model / "plans.json").read_text())
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    cascade = AppSettings.from_conf({}).cascade(backbone_info(nnunet_model))
    assert sorted(cascade.spacing) == sorted(plans["configurations"]["3d_fullres"]["spacing"])
    assert cascade.hu_window == (stats["percentile_00_5"], stats["percentile_99_5"])
    assert (cascade.normalization, cascade.norm_mean, cascade.norm_std) == ("zscore", stats["mean"], stats["std"])


@pytest.mark.parametrize("what", ["weights", "liver", "corrupt", "fold"])
def test_serve_refuses_a_broken_nnunet_model_naming_the_file_and_the_problem(
        tiny_cohort: Path, tmp_path: Path, nnunet_model: Path, what: str):
    folder, message = broken(nnunet_model, tmp_path, what)
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "serve", "--studies", str(tiny_cohort), "--port", "1",
         "--conf", "backbone", str(folder)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot serve with the backbone nnU-Net model" in result.stderr
    assert re.search(message.replace("(", r"\(").replace(")", r"\)"), result.stderr), result.stderr
    assert not (tiny_cohort / ".slpt").exists()  # nothing was set up
