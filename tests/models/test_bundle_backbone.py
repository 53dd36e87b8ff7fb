"""A user's MONAI bundle as the frozen backbone: network, weights, label map and preprocessing read from its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SegResNet, SwinUNETR, VNet

from models.backbone import BackboneConfig, build_backbone, load_backbone, save_backbone
from models.bundle import export_bundle, read_bundle
from models.errors import CheckpointError, ModelError
from models.geometry import Intensity
from models.slpt import SLPTConfig, SLPTNet

#: The first classes of MONAI's wholeBody_ct_segmentation label map (TotalSegmentator's 104 structures): the liver
#: is class 5 there, not 1 as in ours.
WHOLE_BODY_FIRST = ["background", "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta"]
WHOLE_BODY_CLASSES = 105
#: wholeBody_ct_segmentation's intensity preprocessing (its configs/inference.json, after Spacingd): each volume
#: z-scored by the statistics of its nonzero voxels, then that volume's range scaled to [-1, 1].
WHOLE_BODY_INTENSITY = [{"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True},
                        {"_target_": "ScaleIntensityd", "keys": "@image_key", "minv": -1.0, "maxv": 1.0}]


def whole_body_labels() -> dict[str, str]:
    names = WHOLE_BODY_FIRST + [f"structure_{i}" for i in range(len(WHOLE_BODY_FIRST), WHOLE_BODY_CLASSES)]
    return {str(i): name for i, name in enumerate(names)}


def write_bundle(folder: Path, network_def: dict, network: torch.nn.Module, labels: dict[str, str],
                 intensity: list[dict] | None = None,
                 spacing: str = "$[2.5, 2.5, 2.5] if @displayable_configs#highres else [5.0, 5.0, 5.0]",
                 weights: str | None = "model.pt") -> Path:
    """A bundle folder in the model zoo's layout (configs/inference.json with a pixdim expression as
    wholeBody_ct_segmentation has, configs/metadata.json, models/model.pt wrapped as CheckpointSaver writes it)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    image = "@image_key"
    transforms = [
        {"_target_": "LoadImaged", "keys": image},
        {"_target_": "EnsureTyped", "keys": image},
        {"_target_": "EnsureChannelFirstd", "keys": image},
        {"_target_": "Orientationd", "keys": image, "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": image, "pixdim": "@pixdim", "mode": "bilinear"},
    ] + (intensity if intensity is not None else [
        {"_target_": "ScaleIntensityRanged", "keys": image, "a_min": -150, "a_max": 250, "b_min": 0.0, "b_max": 1.0,
         "clip": True},
    ])
    config = {
        "displayable_configs": {"highres": True, "sw_overlap": 0.25, "sw_batch_size": 1},
        "imports": ["$import glob"], "bundle_root": ".", "image_key": "image", "pixdim": spacing,
        "device": "$torch.device('cpu')", "network_def": network_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 1},
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    meta = {"version": "0.2.5", "name": "Whole body CT segmentation",
            "network_data_format": {"outputs": {"pred": {"type": "image", "channel_def": labels}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    if weights == "model.pt":
        torch.save({"model": network.state_dict()}, folder / "models" / "model.pt")
    elif weights == "model.ts":
        torch.jit.script(network).save(str(folder / "models" / "model.ts"))
    return folder


def whole_body_like(folder: Path, **changes) -> Path:
    """A small SegResNet with wholeBody_ct_segmentation's 105 named classes (liver = 5) and its preprocessing
    (RAS, Spacingd, per-volume NormalizeIntensityd(nonzero) and ScaleIntensityd(-1, 1))."""
    changes.setdefault("intensity", WHOLE_BODY_INTENSITY)
    definition = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": WHOLE_BODY_CLASSES,
                  "init_filters": 8, "blocks_down": [1, 2, 2], "blocks_up": [1, 1], "dropout_prob": 0.2}
    torch.manual_seed(0)
    network = SegResNet(**{k: v for k, v in definition.items() if k != "_target_"})
    return write_bundle(folder, definition, network, whole_body_labels(), **changes)


def test_a_whole_body_bundle_loads_with_its_weights_labels_and_preprocessing(tmp_path: Path):
    bundle = whole_body_like(tmp_path / "wholeBody_ct_segmentation")
    network, info = read_bundle(bundle)
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)["model"]
    torch.testing.assert_close(network.state_dict()["conv_final.2.conv.weight"], saved["conv_final.2.conv.weight"])
    assert info.config.name == "segresnet" and info.config.bundle == str(bundle.resolve())
    assert info.config.out_channels == WHOLE_BODY_CLASSES and info.labels[5] == "liver"
    assert info.liver_class() == 5 and info.lesion_class() is None
    assert info.inherit_classes() == (0, 5, 5)  # no upstream lesion class: the tumour starts from the liver
    assert info.metrics["spacing"] == [2.5, 2.5, 2.5]  # the pixdim expression, evaluated
    # the per-volume z-score of the nonzero voxels, then ScaleIntensityd(-1, 1): no HU window
    assert info.intensity() == Intensity(window=None, scheme="volume", nonzero=True, rescale=(-1.0, 1.0))
    assert "hu_window" not in info.metrics
    slpt = SLPTNet(network, SLPTConfig(inherit_classes=info.inherit_classes()))
    backbone_params = sum(p.numel() for p in network.parameters())
    assert slpt.parameter_counts()["total_params"] - slpt.parameter_counts()["tunable_params"] == backbone_params
    assert not any(p.requires_grad for p in network.parameters())  # frozen
    with torch.no_grad():  # an untrained head predicts the backbone's background and liver
        x = torch.randn(1, 1, 16, 16, 16)
        torch.testing.assert_close(slpt(x, torch.tensor([0]))[:, :2], network(x)[:, [0, 5]])


def test_torchscript_weights_are_read_too(tmp_path: Path):
    bundle = whole_body_like(tmp_path / "b", weights="model.ts")
    network, _ = read_bundle(bundle)
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(x), scripted.eval()(x))


def test_our_exported_bundle_reads_back_as_the_same_backbone(tmp_path: Path):
    config = BackboneConfig(name="dynunet", out_channels=5, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    torch.manual_seed(1)
    labels = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney", "4": "lesion"}
    save_backbone(build_backbone(config), config, tmp_path / "bb.pt",
                  {"labels": labels, "spacing": [2.5] * 3, "hu_window": [-200, 250]})
    network, info = read_bundle(export_bundle(tmp_path / "bb.pt", tmp_path / "bundle"))
    ours, _ = load_backbone(tmp_path / "bb.pt")
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(x), ours(x))
    assert info.inherit_classes() == (0, 1, 4) and info.metrics["hu_window"] == [-200.0, 250.0]


def test_a_window_bundle_keeps_its_hu_window(tmp_path: Path):
    window = [{"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -150, "a_max": 250, "b_min": 0.0,
               "b_max": 1.0, "clip": True}]
    _, info = read_bundle(whole_body_like(tmp_path / "b", intensity=window))
    assert info.metrics["hu_window"] == [-150.0, 250.0] and info.intensity() == Intensity((-150.0, 250.0))


NORMALIZE = {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True}


@pytest.mark.parametrize("change, message", [
    ({"labels": {"0": "background", "1": "spleen", "2": "kidney_left"}}, "no class named 'liver'.*1: spleen, 2: kidney_left"),
    ({"intensity": [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "@image_key", "lower": 1, "upper": 99,
                     "b_min": 0, "b_max": 1}]},
     "does not reproduce: ScaleIntensityRangePercentilesd; no ScaleIntensityRanged or NormalizeIntensityd"),
    ({"intensity": [{**NORMALIZE, "subtrahend": 50.0, "divisor": 100.0}]},
     "does not reproduce: NormalizeIntensityd with a fixed subtrahend or divisor"),
    ({"intensity": [{"_target_": "CropForegroundd", "keys": "@image_key", "source_key": "@image_key"}, NORMALIZE]},
     r"CropForegroundd before NormalizeIntensityd \(statistics of a cropped or padded volume\)"),
    ({"intensity": [{"_target_": "ScaleIntensityd", "keys": "@image_key", "minv": -1.0, "maxv": 1.0}]},
     "ScaleIntensityd without NormalizeIntensityd before it"),
    ({"weights": None}, "no weights"),
])
def test_a_bundle_the_server_cannot_use_is_explained(tmp_path: Path, change: dict, message: str):
    labels = change.pop("labels", None)
    if labels is None:
        bundle = whole_body_like(tmp_path / "b", **change)
    else:
        definition = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                      "channels": [4, 8], "strides": [2]}
        network = build_backbone(BackboneConfig(out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0))
        bundle = write_bundle(tmp_path / "b", definition, network, labels)
    with pytest.raises((ModelError, CheckpointError), match=message):
        read_bundle(bundle)[1].liver_class()


def test_a_network_without_an_adapter_is_named(tmp_path: Path):
    definition = {"_target_": "VNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3}
    bundle = write_bundle(tmp_path / "b", definition, VNet(spatial_dims=3, in_channels=1, out_channels=3),
                          {"0": "background", "1": "liver", "2": "spleen"})
    with pytest.raises(ModelError, match="defines a VNet; backbones with an adapter: UNet, SegResNet, DynUNet, SwinUNETR"):
        read_bundle(bundle)


#: The 14 classes of MONAI's swin_unetr_btcv_segmentation bundle (BTCV): the liver is class 6.
BTCV = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
        "inferior_vena_cava", "portal_and_splenic_veins", "pancreas", "right_adrenal_gland", "left_adrenal_gland"]


def test_a_swin_unetr_btcv_bundle_is_prompt_tuned_through_its_encoder_and_full_resolution_decoder(tmp_path: Path):
    definition = {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 14, "feature_size": 24,
                  "use_checkpoint": False}
    torch.manual_seed(0)
    network = SwinUNETR(in_channels=1, out_channels=14, feature_size=24)
    bundle = write_bundle(tmp_path / "swin_unetr_btcv_segmentation", definition, network,
                          {str(i): name for i, name in enumerate(BTCV)})
    backbone, info = read_bundle(bundle)
    assert info.config.name == "swinunetr" and info.liver_class() == 6 and info.inherit_classes() == (0, 6, 6)
    slpt = SLPTNet(backbone, SLPTConfig(inherit_classes=info.inherit_classes(), roi_size=(64, 64, 64)))
    counts = slpt.parameter_counts()
    assert counts["tunable_fraction"] <= 0.06, counts
    assert slpt.prompt_stages == (1, 2, 3, 4)  # the full-resolution convolutional block gets no prompt
    x = torch.randn(1, 1, 64, 64, 64)  # the instance norm of the 1/32 bottleneck needs more than one voxel
    slpt.eval()
    with torch.no_grad():  # untrained: the backbone's background and liver, at full resolution
        torch.testing.assert_close(slpt(x, torch.tensor([0]))[:, :2], backbone(x)[:, [0, 6]], atol=1e-4, rtol=1e-4)
    slpt.train()
    loss = slpt(x, torch.tensor([1])).logsumexp(dim=1).mean()
    loss.backward()
    tuned = [p for p in slpt.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in tuned if p.ndim) and not any(p.requires_grad for p in backbone.parameters())
