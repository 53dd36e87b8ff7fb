"""The frozen upstream backbone: configuration, construction, plain state-dict checkpoints.

A backbone is a stock MONAI 3D encoder-decoder (``UNet`` by default, ``SegResNet`` or ``DynUNet``) built
from a :class:`BackboneConfig`. Weights are a plain PyTorch state dict, so MONAI-bundle weights can be used:
``{"model": sd}`` / ``{"state_dict": sd}`` wrappers and a DataParallel ``module.`` prefix are accepted. The
configuration travels beside the weights as ``<checkpoint>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from monai.networks.nets import DynUNet, SegResNet, UNet
from torch import nn

from models.config import config_from_dict, config_to_dict
from models.errors import CheckpointError, ModelError
from models.geometry import HU_WINDOW, Intensity

BackboneName = Literal["unet", "segresnet", "dynunet", "swinunetr", "plainconvunet", "resencunet"]
NormName = Literal["instance", "batch"]

#: How many offending keys an error message lists before it says "and N more".
_KEYS_SHOWN = 5


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture of the backbone.

    Attributes:
        name: MONAI network: "unet" (default), "segresnet" or "dynunet".
        in_channels: image channels (1 for CT).
        out_channels: upstream classes including background (e.g. 4 organs + background = 5).
        channels: feature width of each encoder stage, shallow to deep. SegResNet needs doubling widths.
        strides: down-sampling stride between consecutive stages (len(channels) - 1 entries).
        num_res_units: residual units per UNet block (DynUNet: >0 means residual blocks;
            SegResNet: residual blocks per encoder stage, at least 1).
        norm: normalisation layer type.
        bundle: a folder whose own files define the network: a MONAI bundle's ``network_def``
            (:func:`models.bundle.read_bundle`) or an nnU-Net model's plans (:func:`models.nnunet.read_nnunet`, the
            ``fold_N`` folder); ``name`` is then its family and the other fields are not used to build it.
    """

    name: BackboneName = "unet"
    in_channels: int = 1
    out_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: NormName = "instance"
    bundle: str = ""

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep tuples so configs compare equal and stay hashable.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if self.bundle and self.name in get_args(BackboneName):
            return  # the bundle's network_def is the architecture
        if self.name not in ("unet", "segresnet", "dynunet"):
            raise ModelError(f"unknown backbone name {self.name!r}; expected unet, segresnet or dynunet")
        if self.norm not in ("instance", "batch"):
            raise ModelError(f"unknown norm {self.norm!r}; expected instance or batch")
        if len(self.channels) < 2:
            raise ModelError(f"need at least 2 stages, got channels={self.channels}")
        if len(self.strides) != len(self.channels) - 1:
            raise ModelError(
                f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries, got {self.strides}"
            )
        if self.in_channels < 1 or self.out_channels < 2:
            raise ModelError(
                f"need in_channels >= 1 and out_channels >= 2, got {self.in_channels}, {self.out_channels}"
            )
        if self.name == "segresnet":
            expected = tuple(self.channels[0] * 2**i for i in range(len(self.channels)))
            if self.channels != expected or any(s != 2 for s in self.strides):
                raise ModelError(
                    f"segresnet needs doubling channels {expected} and strides of 2, "
                    f"got {self.channels}, {self.strides}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists instead of tuples)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ModelError`."""
        return config_from_dict(cls, data, "backbone")


#: Names of an upstream lesion class that a downstream tumour head may start from (lower case, ``_`` for spaces).
LESION_NAMES = ("lesion", "tumor", "tumour")


@dataclass
class BackboneInfo:
    """What the JSON beside a backbone checkpoint holds (or a MONAI bundle's configs, or an nnU-Net folder's plans
    say): the architecture, and ``metrics`` with the pre-training's ``labels`` {index: name}, ``spacing``,
    ``hu_window`` (or ``intensity``, a :class:`models.geometry.Intensity` as a dict), ``patch_size``."""

    config: BackboneConfig
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[int, str]:
        """{class index: name} of the upstream classes; empty where the backbone does not say."""
        return {int(k): str(v) for k, v in (self.metrics.get("labels") or {}).items()}

    def intensity(self) -> Intensity:
        """How HU become this backbone's input: ``metrics["intensity"]`` where the backbone says more than a window
        (an nnU-Net model's z-score, a bundle's per-volume ``NormalizeIntensityd``), else the HU window (ours:
        -200..250) scaled to [0, 1]."""
        if self.metrics.get("intensity"):
            return Intensity(**self.metrics["intensity"])
        return Intensity(tuple(self.metrics.get("hu_window") or HU_WINDOW))

    def liver_class(self) -> int:
        """Index of the class named "liver" (stage 1 of the cascade looks for it); 1 where the backbone has no label
        map. Raises :class:`ModelError`, naming the classes it has, where its map has no liver."""
        if not self.labels:
            return 1
        found = [i for i, name in self.labels.items() if _plain_name(name) == "liver"]
        if not found:
            names = ", ".join(f"{i}: {n}" for i, n in sorted(self.labels.items()))
            raise ModelError(f"the backbone's label map has no class named 'liver' (stage 1 finds the liver by "
                             f"name); its {len(self.labels)} classes: {names}")
        return found[0]

    def lesion_class(self) -> int | None:
        """Index of the first upstream lesion class (a name in :data:`LESION_NAMES` or ending in one, e.g.
        "kidney_tumor"), outside the liver's own tumours; None where there is none."""
        for index, name in sorted(self.labels.items()):
            plain = _plain_name(name)
            if "liver" not in plain and any(plain == n or plain.endswith("_" + n) for n in LESION_NAMES):
                return index
        return None

    def inherit_classes(self) -> tuple[int, int, int]:
        """The upstream classes a downstream (background, liver, tumour) head starts from
        (:attr:`models.slpt.SLPTConfig.inherit_classes`): background, the liver, and an upstream lesion class, or the
        liver where there is none. Without a label map: (0, 1, 4), our upstream cohort's indices
        (:class:`models.slpt.SLPTConfig`'s default)."""
        if not self.labels:
            return 0, 1, 4
        liver = self.liver_class()
        lesion = self.lesion_class()
        return 0, liver, liver if lesion is None else lesion


def _plain_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def network_arguments(cfg: BackboneConfig) -> tuple[str, dict[str, Any]]:
    """(class name in ``monai.networks.nets``, its keyword arguments) of the network ``cfg`` describes: JSON-ready,
    so a MONAI bundle's ``network_def`` is ``{"_target_": name, **arguments}`` (:mod:`models.bundle`)."""
    if cfg.name == "unet":
        return "UNet", {
            "spatial_dims": 3, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "channels": list(cfg.channels), "strides": list(cfg.strides), "num_res_units": cfg.num_res_units,
            "norm": cfg.norm,
        }
    if cfg.name == "segresnet":
        return "SegResNet", {
            "spatial_dims": 3, "init_filters": cfg.channels[0], "in_channels": cfg.in_channels,
            "out_channels": cfg.out_channels, "blocks_down": [max(1, cfg.num_res_units)] * len(cfg.channels),
            "blocks_up": [1] * (len(cfg.channels) - 1), "norm": cfg.norm,
        }
    return "DynUNet", {
        "spatial_dims": 3, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
        "kernel_size": [3] * len(cfg.channels), "strides": [1, *cfg.strides], "upsample_kernel_size": list(cfg.strides),
        "filters": list(cfg.channels), "norm_name": cfg.norm, "res_block": cfg.num_res_units > 0,
    }


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Instantiate the MONAI network described by ``cfg`` (randomly initialised, 3D)."""
    if cfg.bundle:
        raise ModelError(f"a bundle's network is built from its configs (models.bundle.read_bundle): {cfg.bundle}")
    name, arguments = network_arguments(cfg)
    return {"UNet": UNet, "SegResNet": SegResNet, "DynUNet": DynUNet}[name](**arguments)


def config_path(checkpoint: str | Path) -> Path:
    """The JSON file that describes ``checkpoint`` (same name, ``.json`` suffix)."""
    return Path(checkpoint).with_suffix(".json")


def save_backbone(
    model: nn.Module, cfg: BackboneConfig, path: str | Path, metrics: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s state dict to ``path`` and ``{"backbone": cfg, "metrics": metrics}`` beside it.

    Returns:
        The path of the JSON file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    meta = config_path(path)
    meta.write_text(json.dumps({"backbone": cfg.to_dict(), "metrics": metrics or {}}, indent=2, sort_keys=True))
    return meta


def read_backbone_info(path: str | Path) -> BackboneInfo:
    """Read the JSON that :func:`save_backbone` wrote beside ``path``."""
    meta = config_path(path)
    if not meta.is_file():
        raise CheckpointError(f"no backbone config beside the checkpoint: {meta} (pass a BackboneConfig instead)")
    try:
        data = json.loads(meta.read_text())
        return BackboneInfo(BackboneConfig.from_dict(data["backbone"]), dict(data.get("metrics", {})))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"invalid backbone config {meta}: {exc!r}") from exc
    except ModelError as exc:
        raise CheckpointError(f"invalid backbone config {meta}: {exc}") from exc


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``, turning every failure into :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage bytes surface as many unrelated types (IndexError, UnpicklingError, …)
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"not a PyTorch checkpoint: {path} ({type(exc).__name__}: {first_line})") from exc


def unwrap_state_dict(obj: Any, source: str | Path) -> dict[str, torch.Tensor]:
    """Extract a flat state dict from a bare dict or a ``{"model": sd}`` / ``{"state_dict": sd}`` wrapper.

    A leading ``module.`` (DataParallel / DistributedDataParallel) is stripped from every key.
    """
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"checkpoint holds no state dict: {source}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {source} has non-tensor entries: {_list_keys(bad)}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly, explaining any key or shape mismatch in the error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list_keys(unexpected)}")
    # In the model's order, and only the first few: a wrong width mismatches every tensor of the network.
    mismatched = [
        f"shape mismatch for {key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected if key in state and expected[key].shape != state[key].shape
    ]
    problems.extend(mismatched[:_KEYS_SHOWN])
    if len(mismatched) > _KEYS_SHOWN:
        problems.append(f"and {len(mismatched) - _KEYS_SHOWN} more mismatched shapes")
    if problems:
        raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(problems))
    model.load_state_dict(state)


def load_backbone(path: str | Path, cfg: BackboneConfig | None = None) -> tuple[nn.Module, BackboneConfig]:
    """Build the backbone and load its weights from a plain state-dict checkpoint.

    Args:
        path: the ``.pt`` file (bare state dict or MONAI-bundle style wrapper).
        cfg: architecture; read from ``<path>.json`` when omitted.

    Returns:
        (model in eval mode on the CPU, its config).

    Raises:
        CheckpointError: unreadable file, missing config, or weights that do not fit the architecture.
    """
    cfg = cfg or read_backbone_info(path).config
    model = build_backbone(cfg)
    load_state_dict_checked(model, unwrap_state_dict(read_checkpoint(path), path), path)
    return model.eval(), cfg


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else "")
