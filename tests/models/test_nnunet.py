"""A trained nnU-Net v2 model folder as the frozen backbone: network from the plans with nnU-Net's own code, weights
from fold_N/checkpoint_final.pth, spacing, patch size and CTNormalization from plans.json, the liver from dataset.json.

The folders are planned by nnU-Net itself on a few cases of the tiny cohort (tests/models/nnunet_model.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.bundle import backbone_info, open_backbone
from models.errors import CheckpointError, ModelError
from models.nnunet import axis_order, locate, read_nnunet
from models.slpt import SLPTConfig, SLPTNet
from tests.models.nnunet_model import make_nnunet_model


@pytest.fixture(scope="module")
def plain_model(tiny_cohort: Path, tmp_path_factory) -> Path:
    return make_nnunet_model(tmp_path_factory.mktemp("nnunet_plain"), tiny_cohort, "PlainConvUNet")


@pytest.fixture(scope="module")
def resenc_model(tiny_cohort: Path, tmp_path_factory) -> Path:
    return make_nnunet_model(tmp_path_factory.mktemp("nnunet_resenc"), tiny_cohort, "ResidualEncoderUNet")


def nnunet_reference(folder: Path) -> tuple[torch.nn.Module, list[int]]:
    """The network as nnU-Net itself builds and loads it for inference (its axis order), and our axes' order."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(str(folder / "plans.json"))
    cm = manager.get_configuration("3d_fullres")
    network = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1, 3, allow_init=False,
                                     deep_supervision=False)
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network.eval(), axis_order(manager.transpose_forward)


@pytest.mark.parametrize("family", ["plain", "resenc"])
def test_the_network_computes_what_nnunets_own_does_on_our_axes(family, plain_model, resenc_model):
    folder = {"plain": plain_model, "resenc": resenc_model}[family]
    network, info = open_backbone(folder)
    reference, order = nnunet_reference(folder)
    assert type(network).__name__ == {"plain": "PlainConvUNet", "resenc": "ResidualEncoderUNet"}[family]
    assert info.config.name == {"plain": "plainconvunet", "resenc": "resencunet"}[family]
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 8, 12)  # nnU-Net's axes; ours are a permutation of them
    to_ours = (0, 1, *(2 + i for i in order))
    with torch.no_grad():
        expected = reference(x).permute(to_ours)
        torch.testing.assert_close(network(x.permute(to_ours)), expected, rtol=1e-4, atol=1e-4)


def test_spacing_patch_intensity_and_classes_come_from_the_plans(plain_model: Path):
    plans = json.loads((plain_model / "plans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    info = backbone_info(plain_model)
    order = axis_order(plans["transpose_forward"])
    assert info.metrics["spacing"] == [fullres["spacing"][i] for i in order]
    assert info.metrics["patch_size"] == [fullres["patch_size"][i] for i in order]
    intensity = info.intensity()
    assert intensity.scheme == "zscore" and intensity.window == (stats["percentile_00_5"], stats["percentile_99_5"])
    hu = torch.tensor([-5000.0, stats["mean"], 5000.0])
    expected = [(stats["percentile_00_5"] - stats["mean"]) / stats["std"], 0.0,
                (stats["percentile_99_5"] - stats["mean"]) / stats["std"]]
    torch.testing.assert_close(intensity(hu), torch.tensor(expected))  # nnU-Net's CTNormalization
    assert info.labels == {0: "background", 1: "liver", 2: "tumor"}
    assert info.liver_class() == 1 and info.inherit_classes() == (0, 1, 2)
    assert info.config.bundle == str(plain_model / "fold_0")


def test_prompts_attach_to_the_encoder_stages_and_the_head_to_the_full_resolution_decoder_feature(
        plain_model: Path, resenc_model: Path):
    for folder in (plain_model, resenc_model):
        network, info = read_nnunet(folder)
        model = SLPTNet(network, SLPTConfig(roi_size=(16, 16, 16), inherit_classes=info.inherit_classes())).eval()
        assert model.adapter.stages == list(network.encoder.stages)
        assert model.adapter.head_source is network.decoder.seg_layers[-1]
        assert model.prompt_stages == tuple(range(1, len(network.encoder.stages)))  # stage 0 is full resolution
        x = torch.randn(2, 1, 16, 16, 16)
        with torch.no_grad():
            # Untrained, the head inherits the upstream classes: it predicts what the backbone does.
            torch.testing.assert_close(model(x, torch.zeros(2, dtype=torch.long)), network(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("architecture, blocks", [("PlainConvUNet", None), ("ResidualEncoderUNet", [1, 3, 4, 6, 6, 6])])
def test_the_tunable_fraction_stays_at_most_6_percent_at_nnunets_real_widths(architecture, blocks):
    """The 3d_fullres networks nnU-Net plans for a liver CT task (6 stages, 32-320 features, anisotropic first
    kernels); ResEnc M's blocks per stage."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arguments = {
        "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage_decoder": [1 if blocks else 2] * 5, "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        **({"n_blocks_per_stage": blocks} if blocks else {"n_conv_per_stage": [2] * 6}),
    }
    network = get_network_from_plans(f"dynamic_network_architectures.architectures.unet.{architecture}", arguments,
                                     ["conv_op", "norm_op", "dropout_op", "nonlin"], 1, 3, deep_supervision=False)
    counts = SLPTNet(network, SLPTConfig(roi_size=(32, 32, 32), inherit_classes=(0, 1, 2))).parameter_counts()
    assert counts["tunable_fraction"] <= 0.06, counts


def test_a_fold_can_be_named_and_a_result_folder_with_several_needs_one(plain_model: Path, tmp_path: Path):
    assert locate(plain_model / "fold_0").checkpoint == plain_model / "fold_0" / "checkpoint_final.pth"
    several = shutil.copytree(plain_model, tmp_path / plain_model.name)
    shutil.copytree(several / "fold_0", several / "fold_3")
    with pytest.raises(ModelError, match="2 trained folds .*fold_0, fold_3.*pass one of them"):
        backbone_info(several)
    assert backbone_info(several / "fold_3").config.bundle == str(several / "fold_3")


def broken(plain_model: Path, tmp_path: Path, what: str) -> tuple[Path, str]:
    """A copy of the model with one thing wrong: -> (folder, what the error must say)."""
    folder = shutil.copytree(plain_model, tmp_path / plain_model.name)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    if what == "weights":  # plans that ask for wider stages than the checkpoint was trained with
        plans = json.loads((folder / "plans.json").read_text())
        arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [2 * f for f in arch["features_per_stage"]]
        (folder / "plans.json").write_text(json.dumps(plans))
        return folder, f"checkpoint {checkpoint} does not match the model: shape mismatch for encoder\\."
    if what == "liver":
        dataset = json.loads((folder / "dataset.json").read_text())
        dataset["labels"] = {"background": 0, "spleen": 1, "kidney": 2}
        (folder / "dataset.json").write_text(json.dumps(dataset))
        return folder, "no class named 'liver' .* 0: background, 1: spleen, 2: kidney"
    if what == "corrupt":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
        return folder, f"not a readable nnU-Net checkpoint: {checkpoint}"
    if what == "fold":
        shutil.rmtree(folder / "fold_0")
        return folder, f"the nnU-Net model {folder} has no trained fold: no fold_N/checkpoint_final.pth"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["weights", "liver", "corrupt", "fold"])
def test_a_broken_model_is_refused_naming_the_file_and_the_problem(plain_model: Path, tmp_path: Path, what: str):
    folder, message = broken(plain_model, tmp_path, what)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        read_nnunet(folder)[1].liver_class()
    assert isinstance(raised.value, CheckpointError) == (what in ("weights", "corrupt"))


def test_normalisation_with_each_volumes_own_statistics_is_refused(plain_model: Path, tmp_path: Path):
    folder = shutil.copytree(plain_model, tmp_path / plain_model.name)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="plans.json: channel 0 is normalised with ZScoreNormalization"):
        backbone_info(folder)


def test_model_info_reads_an_nnunet_folder(plain_model: Path):
    from tests.app.test_cli import slpt_inline

    result = slpt_inline("model-info", "--json", "--backbone", str(plain_model))
    assert result.exit_code == 0, result.stderr
    counts = json.loads(result.stdout)
    network, _ = read_nnunet(plain_model)
    assert counts["total_params"] > sum(p.numel() for p in network.parameters()) > 0


def test_bench_train_prompt_tunes_an_nnunet_model(plain_model: Path, tmp_path: Path):
    from bench.train import PROMPT_ALL
    from tests.bench.test_train import ratio_percent, slpt, table_rows

    out = tmp_path / "t.md"
    result = slpt("bench", "train", "--size", "16", "--batch", "1", "--warmup", "1", "--steps", "1",
                  "--backbone", str(plain_model), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "plainconvunet (PlainConvUNet" in report and str(plain_model / "fold_0") in report
    rows = table_rows(report)
    assert rows[PROMPT_ALL]["prompt stages"] == "1, 2"  # its 3 encoder stages; the full-resolution one gets none
    assert ratio_percent(rows[PROMPT_ALL]["trainable params"]) < 100.0
