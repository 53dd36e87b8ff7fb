"""The SLPT network: parameter budget, zero-init equivalence, batched prompts, frozen backbone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from models.backbone import BackboneConfig, build_backbone
from models.errors import ModelError
from models.slpt import SLPTConfig, SLPTNet
from tests.models.conftest import ROI, TINY


def tiny_slpt(backbone_cfg: BackboneConfig = TINY, **overrides) -> SLPTNet:
    torch.manual_seed(0)
    return SLPTNet(build_backbone(backbone_cfg), SLPTConfig(**{"roi_size": ROI, **overrides}))


def randomise_fpus(model: SLPTNet) -> None:
    """Open the zero gates so the prompts actually change the features."""
    with torch.no_grad():
        for fpu in model.fpus.values():
            fpu.gate.normal_(0.0, 1.0)


def test_default_model_tunes_at_most_six_percent():
    model = SLPTNet(build_backbone(BackboneConfig()), SLPTConfig())
    counts = model.parameter_counts()
    print(f"\ndefault SLPT (UNet 16-32-64-128, K=3, g=4, r=8): {counts}")
    assert counts["num_prompts"] == 3
    outside_backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert counts["tunable_params"] == outside_backbone
    assert counts["tunable_fraction"] <= 0.06


def unet_head_input(model: SLPTNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the UNet head should read, the backbone logits), computed from the plain backbone."""
    captured = []
    top_up_block = model.backbone.model[2]
    handle = top_up_block.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    try:
        logits = model.backbone(x)
    finally:
        handle.remove()
    feature = nn.functional.interpolate(captured[0], size=x.shape[2:], mode="trilinear", align_corners=False)
    return torch.cat([feature, logits], dim=1), logits


def test_zero_initialised_model_reproduces_backbone_logits():
    model = tiny_slpt().eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        head_input, backbone_logits = unet_head_input(model, x)
        # The UNet head reads the top decoder feature (2 x C_0 channels) as well as the logits: over the
        # logits alone a new class (tumour) could not be learned.
        assert head_input.shape[1] == 2 * TINY.channels[0] + TINY.out_channels == model.head.in_channels
        expected = model.head(head_input)
        for k in range(3):
            out = model(x, torch.full((2,), k))
            torch.testing.assert_close(out, expected)
        # The head starts as a copy of the upstream background/liver logits.
        torch.testing.assert_close(out[:, :2], backbone_logits[:, :2])
        randomise_fpus(model)
        assert not torch.allclose(model(x, torch.zeros(2, dtype=torch.long)), expected)


def test_unet_head_learns_from_the_decoder_feature():
    model = tiny_slpt().train()
    x = torch.randn(1, 1, 16, 16, 16)
    model(x, torch.tensor([0]))[:, 2].sum().backward()
    feature_channels = model.head.in_channels - TINY.out_channels
    assert model.head.weight.grad[2, :feature_channels].abs().sum() > 0


@pytest.mark.parametrize("overrides", [{}, {"head_reads_image": True, "head_reads_stages": (1,)}])
def test_a_one_voxel_head_at_the_decoder_resolution_equals_the_head_over_the_upsampled_feature(overrides):
    """The head is applied to each coarse part before it is upsampled (they commute): same logits and the same
    head gradients, within float rounding, as upsampling the decoder feature first."""
    model = tiny_slpt(**overrides).train()
    randomise_fpus(model)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)
        model.head.bias.normal_(0.0, 0.5)
    x, index = torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 2])
    captured = {}
    original_head = model._apply_head

    def upsample_first(parts, size):
        captured["parts"] = parts
        return original_head(parts, size)

    model._apply_head = upsample_first
    commuted = model(x, index)
    parts = captured["parts"]
    assert parts[0].shape[2:] != x.shape[2:]  # the UNet decoder feature is coarser: the commuted path is taken
    full = [nn.functional.interpolate(p, size=x.shape[2:], mode="trilinear", align_corners=False) for p in parts]
    reference = model.head(torch.cat(full, dim=1))
    torch.testing.assert_close(commuted, reference, rtol=1e-5, atol=1e-5)

    weights = torch.randn_like(commuted)
    grads = [torch.autograd.grad((out * weights).sum(), model.head.weight, retain_graph=True)[0]
             for out in (commuted, reference)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, decoder_feature_of", [
    ("segresnet", lambda net: net.conv_final[2]),
    ("dynunet", lambda net: net.output_block),
])
def test_other_backbones_zero_init_and_batched_prompts(name, decoder_feature_of):
    cfg = BackboneConfig(name=name, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=3)
    model = tiny_slpt(cfg).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    captured = []
    handle = decoder_feature_of(model.backbone).register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    with torch.no_grad():
        model.backbone(x)
        handle.remove()
        expected = model.head(captured[0])
        assert captured[0].shape[1] == 8  # decoder feature, not the 3 logits
        torch.testing.assert_close(model(x, torch.tensor([2])), expected)
        randomise_fpus(model)
        together = model.forward_all(x)
        separate = torch.stack([model(x, torch.tensor([k])) for k in range(3)])
    torch.testing.assert_close(together, separate, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[1])


@pytest.mark.parametrize("name", ["segresnet", "dynunet"])
def test_a_decoder_feature_head_starts_as_the_upstream_classes_it_inherits(name):
    """With a 5-class upstream map (organs and a lesion class), the untrained network predicts the upstream
    background, liver and lesion as its background, liver and tumour: the head copies the output convolution."""
    cfg = BackboneConfig(name=name, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=5)
    model = tiny_slpt(cfg).eval()
    assert model.config.inherit_classes == (0, 1, 4)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor([1])), model.backbone(x)[:, [0, 1, 4]])
    # A backbone without a lesion class: the tumour starts at zero, the shared classes are still copied.
    small = tiny_slpt(replace(cfg, out_channels=4)).eval()
    with torch.no_grad():
        out = small(x, torch.tensor([0]))
        torch.testing.assert_close(out[:, :2], small.backbone(x)[:, :2])
        assert out[:, 2].abs().max() == 0


def test_default_prompts_skip_a_full_resolution_stage_only():
    """A UNet down-samples in its first block: every stage gets prompts. A DynUNet built with a stride-1 first stage
    keeps that stage at full resolution: prompts start one stage deeper, and the full-resolution feature still reaches
    the head through the frozen decoder."""
    unet = tiny_slpt()
    assert unet.prompt_stages == tuple(range(len(unet.adapter.stages)))
    dyn = tiny_slpt(BackboneConfig(name="dynunet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1))
    assert dyn.adapter.full_resolution_stages == 1 and dyn.prompt_stages == (1, 2)
    x = torch.randn(1, 1, 16, 16, 16)
    captured = []
    handle = dyn.backbone.output_block.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    dyn(x, torch.tensor([0]))
    handle.remove()
    assert captured[0].shape[2:] == x.shape[2:]  # the head reads a full-resolution feature


def test_an_int_inherit_classes_of_older_checkpoints_means_the_first_n():
    assert SLPTConfig.from_dict({"inherit_classes": 2}).inherit_classes == (0, 1)


def test_forward_all_equals_separate_passes():
    model = tiny_slpt().eval()
    randomise_fpus(model)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        together = model.forward_all(x)
        separate = torch.stack([model(x, torch.full((2,), k)) for k in range(3)])
    assert together.shape == (3, 2, 3, 16, 16, 16)
    torch.testing.assert_close(together, separate, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[2])  # the prompts differ once gates are open


def test_backbone_is_frozen_and_its_norms_stay_in_eval():
    model = tiny_slpt(replace(TINY, norm="batch"))
    model.train()
    assert model.training and model.head.training
    assert all(not m.training for m in model.backbone.modules())
    assert all(not p.requires_grad for p in model.backbone.parameters())
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm3d)]
    before = [n.running_mean.clone() for n in norms]
    model(torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])).sum().backward()
    assert all(torch.equal(b, n.running_mean) for b, n in zip(before, norms))

    finetune = tiny_slpt(mode="finetune").train()
    assert all(m.training for m in finetune.backbone.modules())
    assert finetune.parameter_counts()["tunable_fraction"] == 1.0
    assert finetune.num_prompts == 1 and len(finetune.prompts) == 0


def test_prompt_stages_restrict_where_prompts_go():
    deep = tiny_slpt(prompt_stages=(1, 2))
    full = tiny_slpt()
    assert sorted(deep.prompts) == ["1", "2"] and sorted(full.prompts) == ["0", "1", "2"]
    assert deep.parameter_counts()["tunable_params"] < full.parameter_counts()["tunable_params"]
    # With no prompt on stage 0, backpropagation never reaches the shallow stage.
    randomise_fpus(deep)
    stage0 = deep.adapter.stages[0]
    seen = []
    stage0.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    deep(torch.randn(1, 1, 16, 16, 16), torch.tensor([0]))
    assert seen == [False]


def test_bad_prompt_arguments_are_explained():
    model = tiny_slpt()
    x = torch.randn(2, 1, 16, 16, 16)
    with pytest.raises(ModelError, match="prompt_index values"):
        model(x, torch.tensor([0, 3]))
    with pytest.raises(ModelError, match="needs a prompt_index"):
        model(x)
    with pytest.raises(ModelError, match="prompt_stages"):
        tiny_slpt(prompt_stages=(5,))
    with pytest.raises(ModelError, match="multiples of 4"):
        tiny_slpt(roi_size=(18, 16, 16))


def test_head_reading_a_prompted_stage_starts_as_the_backbone_and_trains_that_stages_fpu():
    plain = tiny_slpt().eval()
    model = tiny_slpt(head_reads_stages=(0,)).eval()
    assert model.head.in_channels == plain.head.in_channels + TINY.channels[0]
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.zeros(2, dtype=torch.long)), plain(x, torch.zeros(2, dtype=torch.long)))
    # The stage's prompted feature reaches the head: the tumour logit's gradient reaches stage 0's FPU.
    model.train()
    randomise_fpus(model)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.1)
    model(x, torch.tensor([0, 1]))[:, 2].sum().backward()
    assert model.fpus["0"].gate.grad is not None and model.fpus["0"].gate.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="head_reads_stages"):
        tiny_slpt(head_reads_stages=(7,))
