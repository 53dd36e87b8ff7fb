"""The backbone that ships with the code: the file is the one its checksum names, and it is what the recipe says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.backbone import config_path, load_backbone, read_backbone_info
from models.errors import CheckpointError
from models import recipes
from models.slpt import SLPTConfig, SLPTNet
from storage.digest import file_sha256


def test_the_shipped_backbone_installs_checked_and_loads_as_the_recipe_describes(tmp_path: Path):
    dest = recipes.install_embedded_backbone(tmp_path / "studies" / ".slpt" / "backbone.pt")
    assert file_sha256(dest) == recipes.EMBEDDED_SHA256
    assert dest.stat().st_size <= 10 * 2**20  # the most a committed artefact may weigh
    info = read_backbone_info(dest)
    assert info.config.name == recipes.LESION.backbone.name and info.config.channels == recipes.LESION.backbone.channels
    assert info.metrics["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney", "4": "lesion"}
    assert info.metrics["denoise_weight"] == recipes.LESION.schedule.denoise_weight
    backbone, _ = load_backbone(dest)
    network = SLPTNet(backbone, SLPTConfig())
    assert network.prompt_stages == (1, 2, 3, 4)  # its full-resolution first stage gets no prompt
    assert network.parameter_counts()["tunable_fraction"] <= 0.06
    with torch.no_grad():  # the untrained head predicts what the backbone does for background, liver and lesion
        x = torch.randn(1, 1, 48, 48, 48)
        torch.testing.assert_close(network(x, torch.tensor([0])), network.backbone(x)[:, [0, 1, 4]])


def test_a_shipped_file_with_other_bytes_is_refused(tmp_path: Path, monkeypatch):
    tampered = tmp_path / "weights" / "lesion_backbone.pt"
    tampered.parent.mkdir()
    shutil.copyfile(config_path(recipes.EMBEDDED_BACKBONE), config_path(tampered))
    data = bytearray(recipes.EMBEDDED_BACKBONE.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(recipes, "EMBEDDED_BACKBONE", tampered)
    with pytest.raises(CheckpointError, match="sha256"):
        recipes.install_embedded_backbone(tmp_path / "out" / "backbone.pt")
    assert not (tmp_path / "out" / "backbone.pt").exists()


def test_the_study_profile_measures_the_shipped_recipe():
    from sim.profiles import PROFILES

    assert PROFILES["lesion"].recipe is recipes.LESION
    assert json.loads(config_path(recipes.EMBEDDED_BACKBONE).read_text())["metrics"]["epochs"] == recipes.LESION.epochs


def test_a_recipe_makes_its_backbone_on_its_own_upstream_cohort_generated_once(tmp_path: Path):
    from dataclasses import replace

    from models.backbone import BackboneConfig

    tiny = replace(
        recipes.LESION, name="tiny", backbone=BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        epochs=1, upstream_cases=3, upstream_size=24,
    ).with_schedule(patch_size=(16, 16, 16), spacing=(16.0, 16.0, 16.0), coarse_spacing=None, val_fraction=0.0)
    assert tiny.schedule.denoise_weight == recipes.LESION.schedule.denoise_weight  # the rest of the schedule kept
    out = tmp_path / "made" / "backbone.pt"
    metrics = tiny.make(out)
    upstream = tmp_path / "made" / "backbone.upstream"
    labels = json.loads((upstream / "dataset.json").read_text())["labels"]
    assert labels["4"] == "lesion" and len(json.loads((upstream / "dataset.json").read_text())["training"]) == 3
    assert metrics["labels"] == labels and metrics["steps"] == 2  # 3 cases, 1 epoch, batch 2
    assert load_backbone(out)[1].channels == (4, 8)
    stamp = (upstream / "dataset.json").stat().st_mtime_ns
    tiny.make(tmp_path / "made" / "again.pt", upstream=upstream)
    assert (upstream / "dataset.json").stat().st_mtime_ns == stamp  # the cohort is generated once
    assert json.loads(json.dumps(tiny.to_dict()))["backbone"] == tiny.backbone.to_dict()


def test_a_study_profile_refuses_a_recipe_pretrained_at_other_spacings():
    from dataclasses import replace

    from sim.profiles import PROFILES

    with pytest.raises(ValueError, match="pre-trains at"):
        replace(PROFILES["smoke"], spacing=(8.0, 8.0, 8.0))
