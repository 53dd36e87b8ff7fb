"""Our backbone as a MONAI bundle, so that it travels to other MONAI tools (docs/design.md, "Backbones as MONAI
bundles").

A bundle is a folder that ``monai.bundle`` reads: ``configs/metadata.json`` (versions, the label map as the output's
``channel_def``), ``configs/inference.json`` (the network as ``network_def``, the preprocessing that the backbone was
pre-trained with, a sliding-window inferer, an evaluator that writes one segmentation per image) and
``models/model.pt`` (the state dict). ``python -m monai.bundle run --config_file configs/inference.json`` segments
the NIfTI files of ``dataset_dir`` into ``output_dir`` with nothing of ours installed.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from models.backbone import BackboneInfo, load_backbone, network_arguments, read_backbone_info
from models.errors import ModelError
from models.geometry import HU_WINDOW, WORKING_SPACING
from storage.atomic import atomic_path

#: The bundle format version written into ``metadata.json`` (the bundle's own version, not ours).
BUNDLE_VERSION = "0.1.0"


def bundle_labels(info: BackboneInfo) -> dict[str, str]:
    """The label map of a backbone: {channel index: class name} from its pre-training metrics, or ``class_<i>``."""
    labels = info.metrics.get("labels") or {}
    return {str(c): str(labels.get(str(c), "background" if c == 0 else f"class_{c}")) for c in range(info.config.out_channels)}


def inference_config(info: BackboneInfo) -> dict[str, Any]:
    """``configs/inference.json`` of a backbone: its network, its pre-training's preprocessing (RAS, the working
    spacing, the HU window scaled to [0, 1]) and a sliding-window evaluator writing argmax label maps."""
    target, arguments = network_arguments(info.config)
    spacing = [float(s) for s in info.metrics.get("spacing", WORKING_SPACING)]
    a_min, a_max = (float(v) for v in info.metrics.get("hu_window", HU_WINDOW))
    patch = [int(p) for p in info.metrics.get("patch_size", (48, 48, 48))]
    image = "@image_key"
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "dataset_dir": "$@bundle_root + '/sampledata'",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "pixdim": spacing,
        "network_def": {"_target_": target, **arguments},
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": image},
                {"_target_": "EnsureChannelFirstd", "keys": image},
                {"_target_": "Orientationd", "keys": image, "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": image, "pixdim": "@pixdim", "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": image, "a_min": a_min, "a_max": a_max, "b_min": 0.0,
                 "b_max": 1.0, "clip": True},
                {"_target_": "EnsureTyped", "keys": image},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": patch, "sw_batch_size": 1, "overlap": 0.25,
                    "mode": "gaussian"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": image,
                 "nearest_interp": True, "to_tensor": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$numpy.uint8", "separate_folder": False, "resample": False},
            ],
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
            "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"}, "map_location": "@device",
        },
        "initialize": ["$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(info: BackboneInfo, description: str) -> dict[str, Any]:
    """``configs/metadata.json``: versions, what the network reads and writes, and the label map."""
    labels = bundle_labels(info)
    patch = [int(p) for p in info.metrics.get("patch_size", (48, 48, 48))]
    return {
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: "exported by slpt export-bundle"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": _version("nibabel"), "pytorch-ignite": _version("ignite")},
        "name": f"slpt-label {info.config.name} backbone",
        "task": "Upstream multi-organ CT segmentation (a frozen backbone for prompt tuning)",
        "description": description,
        "authors": "slpt-label",
        "copyright": "slpt-label contributors",
        "data_source": "synthetic upstream CT cohort made by slpt-label (cohort.synth)",
        "data_type": "nibabel",
        "image_classes": "single channel CT in HU, windowed and scaled to [0, 1]",
        "label_classes": ", ".join(f"{k}: {v}" for k, v in labels.items()),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in labels.items()),
        "eval_metrics": {f"val_dice_{k}": v for k, v in (info.metrics.get("val_dice") or {}).items()},
        "intended_use": "Research; not for diagnostic use",
        "references": ["Zhu et al., Scalable Label-efficient Prompt Tuning (SLPT) for medical image segmentation"],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1, "spatial_shape": patch,
                "dtype": "float32", "value_range": [0, 1], "is_patch_data": True, "channel_def": {"0": "image"},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(labels), "spatial_shape": patch,
                "dtype": "float32", "value_range": [0, 1], "is_patch_data": True, "channel_def": labels,
            }},
        },
        "build_platform": platform.platform(),
    }


def export_bundle(backbone: Path, out: Path) -> Path:
    """Write ``backbone`` (a checkpoint with its JSON beside it) as a MONAI bundle folder ``out``, atomically (a folder
    that exists is whole). Returns ``out``.

    Raises:
        ModelError: an unreadable backbone, or an ``out`` that exists already.
    """
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists: export-bundle writes a new folder")
    network, _ = load_backbone(backbone)
    info = read_backbone_info(backbone)
    description = (
        f"The frozen backbone of slpt-label ({info.config.name}, channels {list(info.config.channels)}), exported "
        f"from {Path(backbone).name}; its classes: {', '.join(bundle_labels(info).values())}."
    )
    with atomic_path(out) as scratch:
        (scratch / "configs").mkdir(parents=True)
        (scratch / "models").mkdir()
        (scratch / "docs").mkdir()
        (scratch / "configs" / "inference.json").write_text(json.dumps(inference_config(info), indent=2))
        (scratch / "configs" / "metadata.json").write_text(json.dumps(metadata(info, description), indent=2))
        torch.save(network.state_dict(), scratch / "models" / "model.pt")
        (scratch / "docs" / "README.md").write_text(
            f"# {description}\n\nSegment the NIfTI files in a folder with MONAI alone:\n\n"
            "    python -m monai.bundle run --config_file configs/inference.json --bundle_root . "
            "--dataset_dir DIR --output_dir OUT\n"
        )
    return out


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"
