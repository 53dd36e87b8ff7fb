"""Published model versions: tunable tensors only, weights_only round trip, clear refusals."""

from __future__ import annotations

import pytest
import torch

from models.backbone import build_backbone
from models.checkpoint import load_slpt, read_slpt_payload, save_slpt
from models.errors import CheckpointError, ModelError
from models.slpt import SLPTConfig, SLPTNet
from tests.models.conftest import GEOMETRY, ROI, TINY


def trained_like(mode: str = "prompt") -> SLPTNet:
    """A tiny model with non-trivial tunable tensors (as if trained)."""
    torch.manual_seed(0)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY, prompt_stages=(1, 2), mode=mode))
    with torch.no_grad():
        for p in model.tunable_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def test_prompt_model_round_trips_with_weights_only(tmp_path):
    model = trained_like()
    path = save_slpt(model, tmp_path / "v1.pt", TINY, {"dice": torch.tensor(0.5).item(), "cases": ("a", "b")})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["extra"] == {"dice": 0.5, "cases": ["a", "b"]}
    assert not any(k.startswith("backbone.") for k in raw["tensors"])
    stored = sum(t.numel() for t in raw["tensors"].values())
    assert stored == model.parameter_counts()["tunable_params"]

    fresh_backbone = build_backbone(TINY)
    fresh_backbone.load_state_dict(model.backbone.state_dict())
    loaded = load_slpt(path, fresh_backbone).eval()
    assert loaded.config == model.config and loaded.prompt_stages == (1, 2)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_all(x), model.forward_all(x))


def test_prompt_model_refuses_another_backbone_or_none(tmp_path):
    path = save_slpt(trained_like(), tmp_path / "v1.pt", TINY)
    with pytest.raises(CheckpointError, match="trained on a different backbone"):
        load_slpt(path, build_backbone(TINY))
    with pytest.raises(CheckpointError, match="pass the frozen backbone"):
        load_slpt(path)


def test_finetuned_model_stores_the_full_state(tmp_path):
    model = trained_like("finetune")
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)  # the backbone changed during fine-tuning
    path = save_slpt(model, tmp_path / "ft.pt", TINY)
    loaded = load_slpt(path).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_slpt(corrupt, build_backbone(TINY))
    foreign = tmp_path / "state_dict.pt"
    torch.save(build_backbone(TINY).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not an SLPT model file"):
        read_slpt_payload(foreign)
    with pytest.raises(ModelError, match="extra metadata must be JSON-like"):
        save_slpt(trained_like(), tmp_path / "bad.pt", TINY, {"model": object()})


def test_tensors_that_do_not_fit_are_named(tmp_path):
    model = trained_like()
    path = save_slpt(model, tmp_path / "v1.pt", TINY)
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["head.weight"] = torch.zeros(5, 3, 1, 1, 1)
    del payload["tensors"]["fpus.1.gate"]
    torch.save(payload, path)
    message = r"missing fpus\.1\.gate; shape mismatch for head\.weight: file \(5, 3, 1, 1, 1\)"
    with pytest.raises(CheckpointError, match=message):
        load_slpt(path, model.backbone)


def test_a_checkpoint_config_with_loose_geometry_fields_loads_into_one_cascade():
    """Versions published before the cascade had one owner carry spacing, coarse spacing, margin and window loose."""
    from models.cascade import CascadeConfig
    from models.slpt import SLPTConfig

    older = {"num_classes": 3, "spacing": [2.0, 2.0, 2.0], "coarse_spacing": [4.0, 4.0, 4.0], "roi_margin_mm": 9.0,
             "hu_window": [-100.0, 200.0], "inherit_classes": 2}
    config = SLPTConfig.from_dict(older)
    assert config.cascade == CascadeConfig(spacing=(2.0,) * 3, coarse_spacing=(4.0,) * 3, margin_mm=9.0,
                                           hu_window=(-100.0, 200.0))
    assert SLPTConfig.from_dict(config.to_dict()) == config  # and the new form round-trips
