"""Saving and loading published SLPT model versions.

A prompt-mode checkpoint stores ONLY the tunable tensors (prompts, FPUs, head), the SLPT and backbone
configurations and a fingerprint of the frozen backbone weights, so a version is small and is refused
when loaded onto a different backbone. A fine-tune-mode checkpoint stores the full state (its backbone
changed). Files contain only tensors and plain containers, so they load with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.backbone import BackboneConfig, build_backbone, read_checkpoint
from models.errors import CheckpointError, ModelError
from models.slpt import SLPTConfig, SLPTNet

FORMAT = "slpt-model/1"


def backbone_fingerprint(backbone: nn.Module) -> str:
    """SHA-256 over the backbone's state dict (keys, shapes and values, in key order)."""
    digest = hashlib.sha256()
    for key, tensor in backbone.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes() if data.dtype != torch.bfloat16 else data.float().numpy().tobytes())
    return digest.hexdigest()


def save_slpt(
    model: SLPTNet, path: str | Path, backbone_config: BackboneConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write a model version to ``path``.

    Args:
        model: the trained network.
        path: output file (parent folders are created).
        backbone_config: architecture of ``model.backbone`` (needed to rebuild a fine-tuned model).
        extra: plain metadata stored alongside (str/int/float/bool/None, lists and str-keyed dicts).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model.mode == "prompt":
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    payload = {
        "format": FORMAT,
        "slpt": model.config.to_dict(),
        "backbone": backbone_config.to_dict(),
        "backbone_fingerprint": backbone_fingerprint(model.backbone) if model.mode == "prompt" else None,
        "tensors": state,
        "extra": _plain(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_slpt_payload(path: str | Path) -> dict[str, Any]:
    """Read and validate a model-version file without building the model (e.g. for ``model-info``)."""
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"not an SLPT model file (format {FORMAT!r} expected): {path}")
    return payload


def load_slpt(path: str | Path, backbone: nn.Module | None = None, payload: dict[str, Any] | None = None) -> SLPTNet:
    """Rebuild a saved model version.

    Args:
        path: file written by :func:`save_slpt`.
        backbone: the frozen pre-trained backbone (required for prompt mode, must have the same weights
            as at training time); ignored for fine-tune mode, whose backbone is rebuilt from the file.
        payload: what :func:`read_slpt_payload` read from ``path``, where the caller already has it (the file is
            then not read again).

    Raises:
        CheckpointError: unreadable file, wrong format, missing backbone, different backbone weights,
            or tensors that do not fit the rebuilt network.
    """
    payload = read_slpt_payload(path) if payload is None else payload
    try:
        config = SLPTConfig.from_dict(payload["slpt"])
        backbone_config = BackboneConfig.from_dict(payload["backbone"])
    except (KeyError, TypeError, ModelError) as exc:
        raise CheckpointError(f"invalid configuration in {path}: {exc}") from exc
    if config.mode == "finetune":
        backbone = build_backbone(backbone_config)
    elif backbone is None:
        raise CheckpointError(f"{path} is a prompt model: pass the frozen backbone it was trained on")
    elif backbone_fingerprint(backbone) != payload.get("backbone_fingerprint"):
        raise CheckpointError(f"{path} was trained on a different backbone (weights fingerprint differs)")
    model = SLPTNet(backbone, config)
    expected = {
        k: v for k, v in model.state_dict().items() if config.mode == "finetune" or not k.startswith("backbone.")
    }
    tensors = payload.get("tensors", {})
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"shape mismatch for {k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(f"{path} does not fit the rebuilt model: " + "; ".join(problems[:5]))
    model.load_state_dict(tensors, strict=config.mode == "finetune")
    return model


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip: turns numpy scalars and tuples into plain values ``weights_only`` can read."""
    try:
        return json.loads(json.dumps(extra))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"extra metadata must be JSON-like (str/int/float/bool/None, lists, dicts): {exc}") from exc
