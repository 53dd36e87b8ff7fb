"""Where the encoder stages and the decoder feature of each supported MONAI network are.

Prompts are injected with forward hooks on the *output* of each encoder stage, and the new segmentation
head reads the *decoder feature*: the input of the network's final output convolution. Each adapter
returns those modules plus their channel counts, so the SLPT network itself is architecture-agnostic.

Per network (MONAI 1.x):
- ``UNet``: stages are the down blocks of the recursive ``model`` — ``model[0]``, ``model[1].submodule[0]``,
  ``model[1].submodule[1].submodule[0]``, … and the bottom block (the innermost ``SkipConnection``'s
  submodule). MONAI's top up block (``model[2]``) maps straight to ``out_channels``, so at full resolution
  the network has only its ``out_channels`` logits. A head over those alone could not learn a new class:
  on the development cohort neither 1,000 prompt-tuning steps nor 600 steps on every pooled case found any
  tumour (Dice <= 0.023), because tumour and liver leave the frozen top block as the same "liver" logit. The
  head therefore reads the top up block's *input* (the skip feature and the decoded deeper feature, 2·C_0
  channels at half resolution, upsampled trilinearly) together with the logits, whose upstream classes
  seed the head.
- ``SegResNet``: stages are ``down_layers``; the decoder feature is the input of the last conv of
  ``conv_final`` (after its norm and activation), ``init_filters`` channels at full resolution.
- ``DynUNet``: stages are ``input_block``, ``downsamples`` and ``bottleneck``; the decoder feature is the
  input of ``output_block``, ``filters[0]`` channels at full resolution when the first stride is 1 (as
  :func:`models.backbone.build_backbone` builds it): the head sees lesions at the working spacing, where a UNet's
  head reads a half-resolution feature (docs/design.md, "Backbone").
- ``SwinUNETR`` (e.g. a BTCV bundle's): stages are the convolutional encoder blocks that carry the image
  (``encoder1``, full resolution) and the Swin transformer's hidden states (``encoder2``-``encoder4``, ``encoder10``)
  to the decoder; the transformer itself is left as it is. The decoder feature is the input of ``out``,
  ``feature_size`` channels at full resolution.
- nnU-Net's ``PlainConvUNet`` and ``ResidualEncoderUNet`` (``dynamic-network-architectures``, :mod:`models.nnunet`):
  stages are ``encoder.stages`` (a ResEnc's stem before them is left out: it is no skip); the first has stride 1, so
  it is at full resolution. The decoder feature is the input of the last ``decoder.seg_layers`` (the 1×1×1 output
  convolution that runs without deep supervision), ``features_per_stage[0]`` channels at full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monai.networks.layers import SkipConnection
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR, UNet
from torch import nn

from models.errors import ModelError


@dataclass
class BackboneAdapter:
    """Hook points of one backbone.

    Attributes:
        stages: encoder stage modules, shallow to deep; prompts act on their outputs (B, C_s, *spatial_s).
        channels: C_s for each stage.
        head_source: module whose forward *input* is the decoder feature.
        head_channels: channels of what the head reads (the decoder feature, plus ``head_logit_channels``).
        head_logit_channels: output logits the head also reads, concatenated after the decoder feature (0 =
            none; used where the decoder feature is coarser than the output).
        size_divisor: every spatial input size must be a multiple of this (total down-sampling).
        full_resolution_stages: how many leading stages keep the input's resolution (a stride-1 first stage: 1).
        output_conv: the backbone's own 1×1×1 output convolution over the decoder feature (DynUNet, SegResNet), whose
            upstream classes seed the new head (:attr:`models.slpt.SLPTConfig.inherit_classes`); None where the head
            reads the logits instead (UNet).
    """

    stages: list[nn.Module]
    channels: list[int]
    head_source: nn.Module
    head_channels: int
    size_divisor: int
    head_logit_channels: int = 0
    full_resolution_stages: int = 0
    output_conv: nn.Conv3d | None = None


def adapt_backbone(backbone: nn.Module) -> BackboneAdapter:
    """Find the encoder stages and decoder feature of a MONAI ``UNet``, ``SegResNet`` or ``DynUNet``."""
    if isinstance(backbone, UNet):
        return _adapt_unet(backbone)
    if isinstance(backbone, SegResNet):
        return _adapt_segresnet(backbone)
    if isinstance(backbone, DynUNet):
        return _adapt_dynunet(backbone)
    if isinstance(backbone, SwinUNETR):
        return _adapt_swinunetr(backbone)
    if type(backbone).__name__ in ("PlainConvUNet", "ResidualEncoderUNet"):
        return _adapt_nnunet(backbone)
    raise ModelError(
        f"no adapter for backbone type {type(backbone).__name__}; supported: UNet, SegResNet, DynUNet, SwinUNETR, "
        "PlainConvUNet, ResidualEncoderUNet"
    )


def first_conv(stage: nn.Module) -> nn.Conv3d:
    """The first 3D convolution of a stage; its output is the stage's feature *before* normalisation."""
    for module in stage.modules():
        if isinstance(module, nn.Conv3d):
            return module
    raise ModelError(f"stage {type(stage).__name__} has no Conv3d")


def _in_channels(block: nn.Module) -> int:
    """Input channels of a block: those of its first (possibly transposed) 3D convolution."""
    for module in block.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return module.in_channels
    raise ModelError(f"block {type(block).__name__} has no 3D convolution")


def _out_channels(stage: nn.Module) -> int:
    """Output channels of a stage: those of its last convolution (the residual projection when present)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise ModelError(f"stage {type(stage).__name__} has no Conv3d")
    return convs[-1].out_channels


def _adapt_unet(net: UNet) -> BackboneAdapter:
    stages: list[nn.Module] = []
    level = net.model  # Sequential(down, SkipConnection(sub), up)
    while True:
        stages.append(level[0])
        sub = level[1].submodule
        # A deeper level is again Sequential(down, SkipConnection, up); anything else is the bottom block
        # (which may itself be a Sequential subclass such as Convolution, hence the explicit check).
        if isinstance(sub, nn.Sequential) and len(sub) == 3 and isinstance(sub[1], SkipConnection):
            level = sub
        else:
            stages.append(sub)
            break
    return BackboneAdapter(
        stages=stages,
        channels=[_out_channels(s) for s in stages],
        head_source=net.model[2],
        head_channels=_in_channels(net.model[2]) + net.out_channels,
        size_divisor=math.prod(net.strides),
        head_logit_channels=net.out_channels,
    )


def _adapt_segresnet(net: SegResNet) -> BackboneAdapter:
    stages = list(net.down_layers)
    final_conv = net.conv_final[-1]
    return BackboneAdapter(
        stages=stages,
        channels=[_out_channels(s) for s in stages],
        head_source=final_conv,
        head_channels=first_conv(final_conv).in_channels,
        size_divisor=2 ** (len(stages) - 1),
        full_resolution_stages=1,  # the first down layer has no down-sampling convolution
        output_conv=_pointwise(first_conv(final_conv)),
    )


def _adapt_dynunet(net: DynUNet) -> BackboneAdapter:
    stages = [net.input_block, *net.downsamples, net.bottleneck]
    # Strides may be per-axis sequences; the largest per-axis product divides all (powers of 2).
    per_axis = [[s] * 3 if isinstance(s, int) else list(s) for s in net.strides]
    return BackboneAdapter(
        stages=stages,
        channels=[_out_channels(s) for s in stages],
        head_source=net.output_block,
        head_channels=first_conv(net.output_block).in_channels,
        size_divisor=max(math.prod(axis) for axis in zip(*per_axis)),
        full_resolution_stages=next((i for i, axis in enumerate(per_axis) if max(axis) > 1), len(per_axis)),
        output_conv=_pointwise(first_conv(net.output_block)),
    )


def _adapt_swinunetr(net: SwinUNETR) -> BackboneAdapter:
    stages = [net.encoder1, net.encoder2, net.encoder3, net.encoder4, net.encoder10]
    output_conv = first_conv(net.out)
    return BackboneAdapter(
        stages=stages,
        channels=[_out_channels(s) for s in stages],
        head_source=net.out,
        head_channels=output_conv.in_channels,
        size_divisor=32,  # patch embedding 2, then four patch mergings
        full_resolution_stages=1,
        output_conv=_pointwise(output_conv),
    )


def _adapt_nnunet(net: nn.Module) -> BackboneAdapter:
    if getattr(net.decoder, "deep_supervision", False):
        raise ModelError("an nnU-Net network must be built without deep supervision (its output is then one tensor)")
    stages = list(net.encoder.stages)
    # Strides per stage, per axis (an int means the same on every axis); sizes must divide by their product.
    per_axis = [[s] * 3 if isinstance(s, int) else list(s) for s in net.encoder.strides]
    output_conv = net.decoder.seg_layers[-1]
    return BackboneAdapter(
        stages=stages,
        channels=[int(c) for c in net.encoder.output_channels],
        head_source=output_conv,
        head_channels=output_conv.in_channels,
        size_divisor=max(math.prod(axis) for axis in zip(*per_axis)),
        full_resolution_stages=next((i for i, axis in enumerate(per_axis) if max(axis) > 1), len(per_axis)),
        output_conv=_pointwise(output_conv),
    )


def _pointwise(conv: nn.Conv3d) -> nn.Conv3d | None:
    """``conv`` if it is a 1×1×1 convolution (a per-voxel linear map a new head can copy), else None."""
    return conv if tuple(conv.kernel_size) == (1, 1, 1) and conv.groups == 1 else None
