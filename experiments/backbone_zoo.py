"""One backbone per supported family at its upstream widths, random weights, in each family's own format: the inputs of
docs/results/backbones.md (`slpt bench train --backbone ...` per family).

    python -m experiments.backbone_zoo --out runs/zoo

writes runs/zoo/{unet.pt, dynunet.pt} (our checkpoints), runs/zoo/wholeBody_ct_segmentation (a MONAI bundle of
wholeBody's SegResNet: init_filters 32, blocks_down 1-2-2-4, 105 classes), runs/zoo/swin_unetr_btcv_segmentation (the BTCV
bundle's SwinUNETR, feature_size 48, 14 classes) and two nnU-Net v2 result folders planned by nnU-Net itself (default
32-320 features) on a small synthetic cohort of 64³ volumes: runs/zoo/nnunet_plain/... (PlainConvUNet) and
runs/zoo/nnunet_resenc/... (ResidualEncoderUNet). Paths of all of them are printed, one per line: family, path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.networks.nets import SegResNet, SwinUNETR

from models.backbone import BackboneConfig, build_backbone, save_backbone
from tests.models.nnunet_model import make_nnunet_model
from tests.models.test_bundle_backbone import BTCV, whole_body_labels, write_bundle

LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney", "4": "lesion"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=False)
    torch.manual_seed(0)
    made = {}
    for name, config in {
        "unet": BackboneConfig(out_channels=5),
        "dynunet": BackboneConfig(name="dynunet", out_channels=5, channels=(32, 64, 128, 256, 320),
                                  strides=(2, 2, 2, 2), num_res_units=1),
    }.items():
        save_backbone(build_backbone(config), config, out / f"{name}.pt",
                      {"labels": LABELS, "spacing": [2.5] * 3, "hu_window": [-200, 250]})
        made[name] = out / f"{name}.pt"
    segresnet = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 105,
                 "init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout_prob": 0.2}
    made["segresnet"] = write_bundle(out / "wholeBody_ct_segmentation", segresnet,
                                     SegResNet(**{k: v for k, v in segresnet.items() if k != "_target_"}),
                                     whole_body_labels())
    swin = {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 14, "feature_size": 48, "use_checkpoint": False}
    made["swinunetr"] = write_bundle(out / "swin_unetr_btcv_segmentation", swin,
                                     SwinUNETR(in_channels=1, out_channels=14, feature_size=48),
                                     {str(i): name for i, name in enumerate(BTCV)})
    from cohort.synth import generate_cohort

    generate_cohort(out / "cohort", cases=6, seed=0, size=64, progress=False)
    for family, architecture in (("plainconvunet", "PlainConvUNet"), ("resencunet", "ResidualEncoderUNet")):
        made[family] = make_nnunet_model(out / f"nnunet_{family}", out / "cohort", architecture, width=32,
                                         max_width=320)
    for family, path in made.items():
        print(family, path)


if __name__ == "__main__":
    main()
