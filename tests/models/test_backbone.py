"""Backbone construction, adapters and plain state-dict checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from models.adapters import adapt_backbone
from models.backbone import BackboneConfig, build_backbone, load_backbone, save_backbone
from models.errors import CheckpointError, ModelError
from tests.models.conftest import TINY


def test_save_and_load_round_trip_with_json_beside(tmp_path):
    model = build_backbone(TINY)
    path = tmp_path / "backbone.pt"
    meta = save_backbone(model, TINY, path, {"val_mean_dice": 0.9})
    assert meta == tmp_path / "backbone.json"
    assert json.loads(meta.read_text())["metrics"] == {"val_mean_dice": 0.9}

    loaded, cfg = load_backbone(path)
    assert cfg == TINY
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_bundle_wrappers_and_module_prefix_are_accepted(tmp_path, wrapper):
    model = build_backbone(TINY)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "bundle.pt"
    torch.save({wrapper: state, "epoch": 3}, path)
    loaded, _ = load_backbone(path, TINY)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_wrong_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "wide.pt"
    wide = BackboneConfig(channels=(16, 16, 32), strides=(2, 2), num_res_units=1, out_channels=3)
    torch.save(build_backbone(wide).state_dict(), path)
    message = r"shape mismatch for model\.0\.conv\.unit0\.conv\.weight: checkpoint \(16, 1, 3, 3, 3\) vs model \(8, 1, 3, 3, 3\)"
    with pytest.raises(CheckpointError, match=message):
        load_backbone(path, TINY)

    deeper = tmp_path / "deeper.pt"
    four_stages = BackboneConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)
    torch.save(build_backbone(four_stages).state_dict(), deeper)
    with pytest.raises(CheckpointError, match="unexpected keys: "):
        load_backbone(deeper, TINY)


def test_corrupt_and_missing_files_raise_checkpoint_error(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: .*corrupt.pt"):
        load_backbone(corrupt, TINY)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_backbone(tmp_path / "absent.pt", TINY)
    torch.save(build_backbone(TINY).state_dict(), tmp_path / "no_json.pt")
    with pytest.raises(CheckpointError, match="no backbone config beside"):
        load_backbone(tmp_path / "no_json.pt")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": build_backbone(TINY)}, path)  # a whole module, not a state dict
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_backbone(path, TINY)


def test_bad_configs_are_explained():
    with pytest.raises(ModelError, match="strides needs"):
        BackboneConfig(channels=(8, 16, 32), strides=(2,))
    with pytest.raises(ModelError, match="unknown backbone name"):
        BackboneConfig(name="vnet")


@pytest.mark.parametrize("name", ["unet", "segresnet", "dynunet"])
def test_adapter_finds_stages_with_their_channels(name):
    cfg = BackboneConfig(name=name, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=3)
    backbone = build_backbone(cfg)
    adapter = adapt_backbone(backbone)
    shapes = []
    handles = [s.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for s in adapter.stages]
    with torch.no_grad():
        backbone(torch.randn(1, 1, 16, 16, 16))
    for handle in handles:
        handle.remove()
    assert adapter.channels == [8, 16, 32]
    assert [s[1] for s in shapes] == adapter.channels
    assert adapter.size_divisor == 4
