"""MONAI bundles: a user's bundle as the frozen backbone, and ours exported as one (docs/design.md, "Backbones as
MONAI bundles").

Reading (:func:`read_bundle`, :func:`open_backbone`): the network is the bundle's ``network_def``, instantiated by
``monai.bundle.ConfigParser`` and loaded with ``models/model.pt`` (or the weights of ``models/model.ts``); its label map
is the output's ``channel_def`` in ``metadata.json``, in which stage 1 of the cascade finds the liver by name; its
working spacing is the ``Spacingd`` of its preprocessing, and its intensity either the HU window of
``ScaleIntensityRanged`` or, as wholeBody_ct_segmentation, each volume's own z-score (``NormalizeIntensityd``, then
optionally ``ScaleIntensityd(minv, maxv)``), which the cascade binds to every whole volume
(:meth:`models.geometry.Intensity.for_volume`). Preprocessing that our pipeline would not reproduce is refused with a
message naming the transforms and why.

Writing: a bundle is a folder that ``monai.bundle`` reads: ``configs/metadata.json`` (versions, the label map as the output's
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

from monai.bundle import ConfigParser
from torch import nn

from models.backbone import (
    BackboneConfig, BackboneInfo, load_backbone, load_state_dict_checked, network_arguments, read_backbone_info,
    read_checkpoint, unwrap_state_dict,
)
from models.checkpoint import load_slpt
from models.errors import CheckpointError, ModelError
from models.geometry import WORKING_SPACING, Intensity
from models.nnunet import is_nnunet, nnunet_info, read_nnunet
from models.slpt import SLPTNet
from storage.atomic import atomic_path

#: The bundle format version written into ``metadata.json`` (the bundle's own version, not ours).
BUNDLE_VERSION = "0.1.0"
#: Configuration files a bundle's network may be defined in, in the order they are tried.
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: Preprocessing transforms that change nothing our pipeline does differently (loading, typing, channels, cropping
#: foreground, padding); any other transform than these, ``Orientationd`` (RAS), ``Spacingd``,
#: ``ScaleIntensityRanged``, ``NormalizeIntensityd`` and ``ScaleIntensityd`` makes the bundle's inputs something we
#: would not reproduce.
NEUTRAL_TRANSFORMS = frozenset({
    "LoadImaged", "LoadImage", "EnsureTyped", "EnsureType", "EnsureChannelFirstd", "EnsureChannelFirst",
    "CastToTyped", "ToTensord", "ToDeviced", "CropForegroundd", "SpatialPadd", "DivisiblePadd", "Identityd",
})
#: Neutral transforms that change which voxels a volume has: harmless before a window, but before
#: ``NormalizeIntensityd`` they change the statistics it computes, which the cascade (on the uncropped, unpadded
#: working volume) would then not reproduce.
EXTENT_TRANSFORMS = frozenset({"CropForegroundd", "SpatialPadd", "DivisiblePadd"})
#: Network families with an adapter (:mod:`models.adapters`), by class name.
FAMILIES = {"UNet": "unet", "SegResNet": "segresnet", "DynUNet": "dynunet", "SwinUNETR": "swinunetr"}


def is_bundle(path: str | Path) -> bool:
    """A folder with a ``configs/`` folder: a MONAI bundle."""
    return Path(path).is_dir() and (Path(path) / "configs").is_dir()


def is_folder_backbone(path: str | Path) -> bool:
    """A backbone that is a folder of its own files: a MONAI bundle or an nnU-Net model (:mod:`models.nnunet`)."""
    return is_bundle(path) or is_nnunet(path)


def open_backbone(path: str | Path) -> tuple[nn.Module, BackboneInfo]:
    """The frozen backbone at ``path``: a MONAI bundle folder, an nnU-Net v2 model folder or our checkpoint (with its
    JSON): -> (network in eval mode on the CPU, what it is)."""
    if is_bundle(path):
        return read_bundle(path)
    if is_nnunet(path):
        return read_nnunet(path)
    network, _config = load_backbone(path)
    return network, read_backbone_info(path)


def backbone_info(path: str | Path) -> BackboneInfo:
    """What the backbone at ``path`` is (bundle, nnU-Net model or checkpoint), without building it or loading its
    weights."""
    if is_bundle(path):
        return bundle_info(path)
    return nnunet_info(path) if is_nnunet(path) else read_backbone_info(path)


def read_bundle(folder: str | Path) -> tuple[nn.Module, BackboneInfo]:
    """A MONAI bundle folder as a backbone: -> (network in eval mode with its weights, its :class:`BackboneInfo`).

    Raises:
        ModelError: see :func:`bundle_info`; a network_def that does not build, or missing weights.
    """
    folder = Path(folder).resolve()
    parser = _parser(folder)
    info = _bundle_info(parser, folder)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:  # a bad config surfaces as any of many types from monai.bundle
        raise ModelError(f"cannot build the network_def of the bundle {folder}: {exc}") from exc
    if not isinstance(network, nn.Module):
        raise ModelError(f"the network_def of the bundle {folder} is not a torch module: {type(network).__name__}")
    load_state_dict_checked(network, _bundle_weights(folder), folder / "models")
    return network.eval(), info


def bundle_info(folder: str | Path) -> BackboneInfo:
    """What a MONAI bundle folder is as a backbone, from its configs alone (the network is not built).

    Raises:
        ModelError: no config, a network without adapter, no label map, or preprocessing that our pipeline does not
            reproduce (each message says which and what is supported).
    """
    folder = Path(folder).resolve()
    return _bundle_info(_parser(folder), folder)


def _bundle_info(parser: ConfigParser, folder: Path) -> BackboneInfo:
    definition = parser["network_def"]
    target = str(definition.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(definition, dict) else ""
    family = FAMILIES.get(target)
    if family is None:
        raise ModelError(f"the bundle {folder} defines a {target or 'network we cannot name'}; backbones with an "
                         f"adapter: {', '.join(FAMILIES)}")
    in_channels = int(parser.get_parsed_content("network_def#in_channels")) if "in_channels" in definition else 1
    labels = _label_map(parser, folder)
    spacing, intensity = _preprocessing(parser, folder)
    config = BackboneConfig(name=family, in_channels=in_channels, out_channels=len(labels), bundle=str(folder))
    meta = parser.get("_meta_") or {}
    metrics = {"labels": {str(k): v for k, v in labels.items()}, "spacing": spacing, "coarse_spacing": spacing,
               "source": f"MONAI bundle {meta.get('name', folder.name)} {meta.get('version', '')}"}
    if intensity.scheme == "window":
        metrics["hu_window"] = list(intensity.window)
    else:
        metrics["intensity"] = intensity.to_dict()
    return BackboneInfo(config, metrics)


def _parser(folder: Path) -> ConfigParser:
    config = next((folder / "configs" / name for name in CONFIG_NAMES if (folder / "configs" / name).is_file()), None)
    if config is None:
        raise ModelError(f"the bundle {folder} has none of configs/{', configs/'.join(CONFIG_NAMES)}")
    parser = ConfigParser()
    try:
        parser.read_config(config)
        if (folder / "configs" / "metadata.json").is_file():
            parser.read_meta(folder / "configs" / "metadata.json")
    except Exception as exc:
        raise ModelError(f"cannot read the bundle config {config}: {exc}") from exc
    parser["bundle_root"] = str(folder)  # expressions that build paths from it resolve inside the bundle
    if "network_def" not in parser.get():
        raise ModelError(f"{config} has no network_def")
    return parser


def _bundle_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``models/model.pt`` (bare or wrapped) or of the TorchScript ``models/model.ts``."""
    if (folder / "models" / "model.pt").is_file():
        path = folder / "models" / "model.pt"
        return unwrap_state_dict(read_checkpoint(path), path)
    if (folder / "models" / "model.ts").is_file():
        try:
            return dict(torch.jit.load(folder / "models" / "model.ts", map_location="cpu").state_dict())
        except Exception as exc:
            raise CheckpointError(f"cannot read the TorchScript weights {folder / 'models' / 'model.ts'}: {exc}") from exc
    raise CheckpointError(f"the bundle {folder} has no weights: models/model.pt or models/model.ts")


def _label_map(parser: ConfigParser, folder: Path) -> dict[int, str]:
    """{index: name} of the network's output: metadata.json's ``network_data_format.outputs.pred.channel_def``."""
    meta = parser.get("_meta_") or {}
    try:
        channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        return {int(k): str(v) for k, v in channels.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelError(
            f"the bundle {folder} names no output classes: configs/metadata.json needs "
            "network_data_format.outputs.pred.channel_def {index: name} (stage 1 finds the liver by name)"
        ) from None


def _preprocessing(parser: ConfigParser, folder: Path) -> tuple[list[float], Intensity]:
    """(working spacing, intensity) of the bundle's preprocessing, checked to be what our pipeline reproduces: RAS,
    one ``Spacingd``, then either an HU window ``ScaleIntensityRanged`` into [0, 1] or a per-volume
    ``NormalizeIntensityd`` (optionally followed by ``ScaleIntensityd(minv, maxv)``)."""
    try:
        transforms = parser["preprocessing"]["transforms"]
    except (KeyError, TypeError):
        raise ModelError(f"the bundle {folder} has no preprocessing.transforms to read its spacing and window from") from None
    spacing = window = normalize = rescale = None
    other, extent = [], []
    for index, transform in enumerate(transforms):
        target = str(transform.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(transform, dict) else str(transform)
        here = f"preprocessing#transforms#{index}"

        def value(key: str, default: Any) -> Any:
            return parser.get_parsed_content(f"{here}#{key}") if key in transform else default

        if target in ("Spacingd", "Spacing"):
            spacing = [float(v) for v in parser.get_parsed_content(f"{here}#pixdim")]
        elif target in ("Orientationd", "Orientation"):
            if str(value("axcodes", "")) != "RAS":
                other.append(f"{target}(axcodes={value('axcodes', None)})")
        elif target == "ScaleIntensityRanged":
            window = [float(value("a_min", 0.0)), float(value("a_max", 1.0))]
            if (float(value("b_min", 0.0)), float(value("b_max", 1.0))) != (0.0, 1.0) or not value("clip", False):
                other.append("ScaleIntensityRanged into another range than [0, 1] with clip")
        elif target == "NormalizeIntensityd":  # channel_wise or not: one CT channel has one set of statistics
            normalize = bool(value("nonzero", False))
            if value("subtrahend", None) is not None or value("divisor", None) is not None:
                other.append("NormalizeIntensityd with a fixed subtrahend or divisor")
            if spacing is None:
                other.append("NormalizeIntensityd before Spacingd (statistics of the original grid)")
            if extent:
                other.append(f"{', '.join(extent)} before NormalizeIntensityd (statistics of a cropped or padded "
                             "volume)")
        elif target == "ScaleIntensityd":
            minv, maxv = value("minv", 0.0), value("maxv", 1.0)
            if normalize is None:
                other.append("ScaleIntensityd without NormalizeIntensityd before it")
            elif minv is None and maxv is None:  # MONAI then multiplies by 1 + factor, or leaves the image
                if value("factor", None) is not None:
                    other.append("ScaleIntensityd by a factor")
            elif minv is None or maxv is None:
                rescale = [0.0, 1.0]  # one bound None: MONAI rescales the volume's range to [0, 1]
            else:
                rescale = [float(minv), float(maxv)]
        elif target not in NEUTRAL_TRANSFORMS:
            other.append(target)
        elif target in EXTENT_TRANSFORMS:
            extent.append(target)
    if window is not None and normalize is not None:
        other.append("both ScaleIntensityRanged and NormalizeIntensityd")
    if other or spacing is None or (window is None and normalize is None):
        problems = ([f"transforms our pipeline does not reproduce: {', '.join(other)}"] if other else []) + (
            ["no Spacingd"] if spacing is None else []) + (
            ["no ScaleIntensityRanged or NormalizeIntensityd"] if window is None and normalize is None else [])
        raise ModelError(
            f"the bundle {folder} preprocesses its images in a way this server cannot match ({'; '.join(problems)}); "
            "it supports RAS orientation, one Spacingd, and then either an HU window ScaleIntensityRanged(a_min, "
            "a_max, b_min=0, b_max=1, clip=True) or each volume's own NormalizeIntensityd(nonzero) on the resampled "
            "volume, optionally followed by ScaleIntensityd(minv, maxv)"
        )
    if len(spacing) == 1:
        spacing = spacing * 3
    if normalize is not None:
        return spacing, Intensity(window=None, scheme="volume", nonzero=normalize, rescale=rescale)
    return spacing, Intensity(window=window)


def bundle_labels(info: BackboneInfo) -> dict[str, str]:
    """The label map of a backbone: {channel index: class name} from its pre-training metrics, or ``class_<i>``."""
    labels = info.metrics.get("labels") or {}
    return {str(c): str(labels.get(str(c), "background" if c == 0 else f"class_{c}")) for c in range(info.config.out_channels)}


def intensity_transforms(intensity: Intensity, image: str = "@image_key") -> list[dict[str, Any]]:
    """MONAI transforms that map HU as ``intensity`` does, after ``Spacingd``: one ``ScaleIntensityRanged`` (clip to
    the window, then its linear map: [0, 1], or a fixed z-score), or a per-volume ``NormalizeIntensityd`` (and
    ``ScaleIntensityd``)."""
    if intensity.scheme == "volume":
        return [{"_target_": "NormalizeIntensityd", "keys": image, "nonzero": intensity.nonzero}] + (
            [] if intensity.rescale is None else
            [{"_target_": "ScaleIntensityd", "keys": image, "minv": intensity.rescale[0],
              "maxv": intensity.rescale[1]}])
    low, high = intensity.window
    return [{"_target_": "ScaleIntensityRanged", "keys": image, "a_min": low, "a_max": high,
             "b_min": float(intensity(torch.tensor(low))), "b_max": float(intensity(torch.tensor(high))), "clip": True}]


def inference_config(info: BackboneInfo, intensity: Intensity | None = None) -> dict[str, Any]:
    """``configs/inference.json`` of a backbone: its network, its pre-training's preprocessing (RAS, the working
    spacing, ``intensity``, default the backbone's: :func:`intensity_transforms`) and a sliding-window evaluator
    writing argmax label maps."""
    target, arguments = network_arguments(info.config)
    spacing = [float(s) for s in info.metrics.get("spacing", WORKING_SPACING)]
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
                *intensity_transforms(intensity or info.intensity(), image),
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


class PromptEnsemble(nn.Module):
    """A model version as one plain network: (B, 1, *S) windowed image -> (B, C, *S) the mean of its K prompts'
    softmax maps (K = 1 for a fine-tuned version), whose argmax is the server's pre-segmentation."""

    def __init__(self, model: SLPTNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.forward_all(x), dim=2).mean(dim=0)


def export_model_bundle(version: Path, backbone: Path, out: Path) -> Path:
    """Write a published model version (:func:`models.checkpoint.save_slpt`; prompt versions need the ``backbone``
    they were tuned on) as a MONAI bundle folder ``out``, atomically. The network travels as TorchScript
    (``models/model.ts``: the frozen backbone, prompts and head traced into one module, :class:`PromptEnsemble`), so
    MONAI alone runs it, without this package. It segments liver and tumour over the whole volume at the version's
    working spacing; the server's stage 1 (the liver ROI) is not part of it. Returns ``out``.

    Raises:
        ModelError: an unreadable version or backbone, a version tuned on another backbone, or an existing ``out``.
    """
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists: export-bundle writes a new folder")
    network, info = open_backbone(backbone)
    model = load_slpt(version, network).eval()
    config = model.config
    labels = {"0": "background", "1": "liver", "2": "tumour"}
    with torch.no_grad():
        traced = torch.jit.trace(PromptEnsemble(model), torch.zeros(1, 1, *config.roi_size), check_trace=False)
    inference = inference_config(info, config.cascade.intensity)
    del inference["network_def"], inference["checkpointloader"]  # the TorchScript file holds the weights
    inference["initialize"] = []
    inference["network"] = "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)"
    inference["pixdim"] = [float(v) for v in config.cascade.spacing]
    inference["inferer"]["roi_size"] = list(config.roi_size)
    post = inference["postprocessing"]["transforms"]
    inference["postprocessing"]["transforms"] = [t for t in post if t["_target_"] != "Activationsd"]  # already softmax
    description = (
        f"A {config.mode}-tuned liver and tumour model of slpt-label (model version {Path(version).stem}) on the "
        f"frozen {info.config.name} backbone, exported with its backbone as one TorchScript network."
    )
    meta = metadata(info, description)
    meta.update(name=f"slpt-label liver and tumour model {Path(version).stem}",
                task="Liver and liver tumour segmentation in CT", label_classes=", ".join(f"{k}: {v}" for k, v in labels.items()),
                pred_classes=", ".join(f"{k}: {v}" for k, v in labels.items()), eval_metrics={})
    for key in ("inputs", "outputs"):
        field = "image" if key == "inputs" else "pred"
        meta["network_data_format"][key][field]["spatial_shape"] = list(config.roi_size)
    meta["network_data_format"]["outputs"]["pred"].update(num_channels=len(labels), channel_def=labels)
    with atomic_path(out) as scratch:
        for sub in ("configs", "models", "docs"):
            (scratch / sub).mkdir(parents=True)
        (scratch / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
        (scratch / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
        torch.jit.save(traced, str(scratch / "models" / "model.ts"))
        (scratch / "docs" / "README.md").write_text(
            f"# {description}\n\nSegment the NIfTI files in a folder with MONAI alone (whole volume, no liver ROI):\n\n"
            "    python -m monai.bundle run --config_file configs/inference.json --bundle_root . "
            "--dataset_dir DIR --output_dir OUT\n"
        )
    return out


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"
