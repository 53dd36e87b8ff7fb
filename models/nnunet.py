"""A trained nnU-Net v2 model as the frozen backbone (docs/design.md, "Backbones from nnU-Net").

The folder is what ``nnUNetv2_train`` leaves in ``nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>``:
``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth``. ``--conf backbone`` takes that folder (it must
then hold exactly one fold) or one ``fold_N`` in it. Everything comes from nnU-Net's own files, read with nnU-Net's own
code (``PlansManager``, ``get_network_from_plans``, ``dynamic-network-architectures``):

- the network: the configuration's architecture (``PlainConvUNet`` or ``ResidualEncoderUNet``) without deep
  supervision, loaded with the checkpoint's ``network_weights``;
- the working spacing and patch size: the configuration's (``3d_fullres`` unless the folder's name says another);
- the intensity normalisation: ``CTNormalization`` with the foreground statistics of ``plans.json``
  (``foreground_intensity_properties_per_channel``): HU clipped to the 0.5 / 99.5 percentiles, then z-scored;
- the classes: ``dataset.json``'s ``labels``, in which stage 1 of the cascade finds the liver by name.

Axes: nnU-Net's networks see SimpleITK arrays, (z, y, x) permuted by the plans' ``transpose_forward``; ours see RAS
(X, Y, Z). The network is therefore built with its per-axis kernel sizes and strides in our order and every
convolution kernel is permuted to match (:func:`axis_order`), so the same weights compute the same function on our
arrays. Flips between the training images' orientation and RAS are left to nnU-Net's mirroring augmentation, which is
on for every axis by default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.backbone import BackboneConfig, BackboneInfo, load_state_dict_checked
from models.errors import CheckpointError, ModelError
from models.geometry import Intensity

PLANS, DATASET, CHECKPOINT = "plans.json", "dataset.json", "checkpoint_final.pth"
#: The configuration read where the folder's name (``trainer__plans__configuration``) does not name one.
DEFAULT_CONFIGURATION = "3d_fullres"
#: Architectures with an adapter (:mod:`models.adapters`), by class name -> :data:`models.backbone.BackboneName`.
FAMILIES = {"PlainConvUNet": "plainconvunet", "ResidualEncoderUNet": "resencunet"}
_FOLD = re.compile(r"fold_(\d+|all)$")


@dataclass(frozen=True)
class NNUNetFolder:
    """Where an nnU-Net model's files are: ``root`` (plans.json, dataset.json), its ``fold`` folder, the
    ``configuration`` name."""

    root: Path
    fold: Path
    configuration: str

    @property
    def checkpoint(self) -> Path:
        return self.fold / CHECKPOINT


def is_nnunet(path: str | Path) -> bool:
    """An nnU-Net result folder (plans.json and dataset.json in it) or one ``fold_N`` of one."""
    path = Path(path)
    if not path.is_dir():
        return False
    root = path.parent if _FOLD.match(path.name) else path
    return (root / PLANS).is_file() and (root / DATASET).is_file()


def locate(path: str | Path) -> NNUNetFolder:
    """The files of the nnU-Net model at ``path`` (the result folder or one of its folds).

    Raises:
        ModelError: no fold with a ``checkpoint_final.pth``, or several where the result folder was given.
    """
    path = Path(path).resolve()
    if _FOLD.match(path.name):
        root, fold = path.parent, path
        if not (fold / CHECKPOINT).is_file():
            raise ModelError(f"the nnU-Net fold {fold} has no {CHECKPOINT} (has its training finished?)")
    else:
        root = path
        folds = sorted(p for p in root.iterdir() if p.is_dir() and _FOLD.match(p.name))
        trained = [p for p in folds if (p / CHECKPOINT).is_file()]
        if not trained:
            found = ", ".join(p.name for p in folds) or "no fold_N folder"
            raise ModelError(f"the nnU-Net model {root} has no trained fold: no fold_N/{CHECKPOINT} ({found})")
        if len(trained) > 1:
            raise ModelError(f"the nnU-Net model {root} has {len(trained)} trained folds "
                             f"({', '.join(p.name for p in trained)}): pass one of them, e.g. {trained[0]}")
        fold = trained[0]
    parts = root.name.split("__")
    configuration = parts[2] if len(parts) == 3 else DEFAULT_CONFIGURATION
    return NNUNetFolder(root, fold, configuration)


def nnunet_info(path: str | Path) -> BackboneInfo:
    """What the nnU-Net model at ``path`` is as a backbone, from plans.json and dataset.json alone (the network is
    neither built nor loaded).

    Raises:
        ModelError: see :func:`locate`; unreadable JSON, a configuration or architecture we cannot use, a
            normalisation other than ``CTNormalization``, more than one input channel, region-based labels.
    """
    folder = locate(path)
    plans, dataset = _read_json(folder.root / PLANS), _read_json(folder.root / DATASET)
    manager, configuration = _configuration(plans, folder)
    family = FAMILIES.get(configuration.network_arch_class_name.rsplit(".", 1)[-1])
    if family is None:
        raise ModelError(f"{folder.root / PLANS}: configuration {folder.configuration!r} uses the architecture "
                         f"{configuration.network_arch_class_name}; supported: {', '.join(FAMILIES)}")
    labels = _labels(manager, dataset, folder.root / DATASET)
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    if len(channels) != 1:
        raise ModelError(f"{folder.root / DATASET}: the model reads {len(channels)} channels ({channels}); this server "
                         "feeds one CT image")
    order = axis_order(manager.transpose_forward)
    spacing = [float(configuration.spacing[i]) for i in order]
    metrics = {
        "labels": {str(k): v for k, v in labels.items()},
        "spacing": spacing, "coarse_spacing": spacing,
        "patch_size": [int(configuration.patch_size[i]) for i in order],
        "intensity": _intensity(manager, configuration, folder.root / PLANS).to_dict(),
        "source": f"nnU-Net v2 {manager.dataset_name} {folder.root.name} {folder.fold.name}",
    }
    config = BackboneConfig(name=family, in_channels=1, out_channels=len(labels), bundle=str(folder.fold))
    return BackboneInfo(config, metrics)


def read_nnunet(path: str | Path) -> tuple[nn.Module, BackboneInfo]:
    """The nnU-Net model at ``path`` as a backbone: -> (network in eval mode on the CPU with the checkpoint's weights,
    in our axis order; its :class:`BackboneInfo`).

    Raises:
        ModelError: see :func:`nnunet_info`.
        CheckpointError: an unreadable checkpoint, one without ``network_weights``, one trained for another
            configuration, or weights that do not fit the plans' network (each naming the file).
    """
    folder = locate(path)
    info = nnunet_info(folder.fold)
    plans, dataset = _read_json(folder.root / PLANS), _read_json(folder.root / DATASET)
    manager, configuration = _configuration(plans, folder)
    checkpoint = _read_checkpoint(folder.checkpoint)
    trained_for = (checkpoint.get("init_args") or {}).get("configuration")
    if trained_for is not None and trained_for != folder.configuration:
        raise CheckpointError(f"{folder.checkpoint} was trained for the configuration {trained_for!r}, the folder "
                              f"{folder.root.name} says {folder.configuration!r}")
    network = build_network(manager, configuration, len(dataset.get("channel_names") or dataset.get("modality")),
                            info.config.out_channels)
    order = axis_order(manager.transpose_forward)
    weights = {k: _permute_kernel(v, order) for k, v in checkpoint["network_weights"].items()}
    load_state_dict_checked(network, weights, folder.checkpoint)
    return network.eval(), info


def build_network(manager: Any, configuration: Any, in_channels: int, out_channels: int) -> nn.Module:
    """The configuration's network from ``dynamic-network-architectures`` (through nnU-Net's own
    ``get_network_from_plans``), without deep supervision, its per-axis kernel sizes and strides in our axis order."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    order = axis_order(manager.transpose_forward)
    arguments = dict(configuration.network_arch_init_kwargs)
    for key in ("kernel_sizes", "strides"):
        arguments[key] = [[per_axis[i] for i in order] if isinstance(per_axis, (list, tuple)) else per_axis
                          for per_axis in arguments[key]]
    return get_network_from_plans(
        configuration.network_arch_class_name, arguments, configuration.network_arch_init_kwargs_req_import,
        in_channels, out_channels, allow_init=False, deep_supervision=False,
    )


def axis_order(transpose_forward: list[int]) -> list[int]:
    """For each of our axes (RAS X, Y, Z), the nnU-Net network axis that sees it.

    nnU-Net's network axis i is axis ``transpose_forward[i]`` of the SimpleITK array, whose axes are (z, y, x); so our
    axis a is the network axis i with ``transpose_forward[i] == 2 - a``. The default (0, 1, 2) gives (2, 1, 0).
    """
    return [list(transpose_forward).index(2 - a) for a in range(3)]


def _permute_kernel(tensor: torch.Tensor, order: list[int]) -> torch.Tensor:
    """A (transposed) convolution kernel (O, I, k_0, k_1, k_2) in nnU-Net's axes -> in ours; other tensors as they are."""
    if tensor.ndim != 5:
        return tensor
    return tensor.permute(0, 1, *(2 + i for i in order)).contiguous()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"the nnU-Net model has no {path.name}: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    return data


def _configuration(plans: dict[str, Any], folder: NNUNetFolder) -> tuple[Any, Any]:
    """(nnU-Net's ``PlansManager``, the folder's ``ConfigurationManager``), checked to be a 3D configuration."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    path = folder.root / PLANS
    try:
        manager = PlansManager(plans)
        available = manager.available_configurations
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} is not an nnU-Net v2 plans file: {exc!r}") from exc
    if folder.configuration not in available:
        raise ModelError(f"{path} has no configuration {folder.configuration!r} (the folder {folder.root.name} "
                         f"names it); it has: {', '.join(available)}")
    try:
        configuration = manager.get_configuration(folder.configuration)
        dims = len(configuration.patch_size)
        configuration.network_arch_class_name  # noqa: B018  (raises for plans without an architecture)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: configuration {folder.configuration!r} is incomplete: {exc!r}") from exc
    if dims != 3:
        raise ModelError(f"{path}: configuration {folder.configuration!r} is {dims}D; the backbone must be 3D")
    return manager, configuration


def _labels(manager: Any, dataset: dict[str, Any], path: Path) -> dict[int, str]:
    """{index: name} of the network's outputs, from dataset.json's ``labels`` {name: index}."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"{path} has no labels {{name: index}} (stage 1 finds the liver by name)")
    if manager.get_label_manager(dataset).has_regions:
        raise ModelError(f"{path} defines region-based labels ({labels}); the backbone must predict one class per "
                         "voxel (softmax), as nnU-Net does with plain labels")
    by_index = {int(index): str(name) for name, index in labels.items()}
    if sorted(by_index) != list(range(len(by_index))):
        raise ModelError(f"{path}: the label indices {sorted(by_index)} are not 0..{len(by_index) - 1}")
    return by_index


def _intensity(manager: Any, configuration: Any, path: Path) -> Intensity:
    """nnU-Net's ``CTNormalization`` of channel 0 as an :class:`Intensity`."""
    scheme = configuration.normalization_schemes[0]
    if scheme != "CTNormalization":
        raise ModelError(
            f"{path}: channel 0 is normalised with {scheme}; this server supports CTNormalization (statistics fixed "
            "at training). Other schemes use each volume's own statistics, which crops of it do not reproduce"
        )
    try:
        stats = manager.foreground_intensity_properties_per_channel["0"]
        return Intensity(window=(stats["percentile_00_5"], stats["percentile_99_5"]), scheme="zscore",
                         mean=float(stats["mean"]), std=max(float(stats["std"]), 1e-8))
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: CTNormalization needs foreground_intensity_properties_per_channel['0'] with "
                         f"mean, std, percentile_00_5 and percentile_99_5: missing {exc}") from exc


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint dict, read without running code from it (``weights_only``; the numpy scalars of its
    training log are allowed)."""
    try:
        with torch.serialization.safe_globals([np.core.multiarray.scalar, np.dtype, *_numpy_dtypes()]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage bytes surface as many unrelated types
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"not a readable nnU-Net checkpoint: {path} ({type(exc).__name__}: {first_line})") from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise CheckpointError(f"{path} is not an nnU-Net checkpoint: no network_weights (nnU-Net's trainers write "
                              "{'network_weights': ..., 'init_args': ..., 'trainer_name': ...})")
    return checkpoint


def _numpy_dtypes() -> list[type]:
    return [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")]
