"""The SLPT network: a frozen MONAI backbone, K prompt sets with their FPUs, and a new segmentation head.

Prompt mode (the method): backbone parameters are frozen and the backbone stays in eval mode even under
``.train()`` (normalisation statistics and dropout are those of pre-training). Trainable: the prompts, one
FPU per prompted stage, and the 1×1×1 head. Prompts are injected by forward hooks on the encoder-stage
outputs found by :mod:`models.adapters`; hooks exist only during a forward call.

Fine-tune mode (the baseline): the same backbone and head, no prompts, everything trainable, and the
backbone follows ``.train()``/``.eval()`` normally. It behaves as a single "prompt" (K = 1).

The head reads the decoder feature (for UNet: the top decoder feature upsampled, plus the backbone's logits,
see :mod:`models.adapters`). With all FPU gates at zero, ``SLPTNet(x) == head(decoder_feature(backbone(x)))``
exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from models.adapters import BackboneAdapter, adapt_backbone
from models.cascade import CascadeConfig
from models.config import config_from_dict, config_to_dict
from models.errors import ModelError
from models.prompts import FeaturePromptUpdater, PromptBank

Mode = Literal["prompt", "finetune"]


@dataclass(frozen=True)
class SLPTConfig:
    """Everything needed to rebuild an SLPT network around a given backbone.

    Attributes:
        num_classes: downstream classes including background (e.g. 3: background, liver, tumour).
        num_prompts: K, number of prompt sets (prompt mode only; fine-tune mode is K = 1).
        prompt_grid: g, prompts are C_s × g × g × g before being resized to the feature map.
        fpu_rank: r, width of the FPU's low-rank pointwise bottleneck and channel attention.
        prompt_stages: encoder stages (0 = shallowest) that get prompts; None = every stage below the input's
            resolution (all stages of a UNet; a DynUNet's or SegResNet's full-resolution first stage is left out: a
            prompt there doubles a prompt-tuning step on the CPU, and the head reads the full-resolution decoder
            feature anyway; docs/design.md, "Backbone"). Deeper-only prompts let back-propagation stop early,
            saving compute as well as parameters.
        mode: "prompt" (frozen backbone) or "finetune" (everything trainable, no prompts).
        seed: prompt k of stage s is initialised from seed + 1000·s + k.
        prompt_init_std: standard deviation of the initial prompt values.
        inherit_classes: the upstream class each downstream class starts from: downstream class c copies upstream
            class ``inherit_classes[c]`` (the logit of a UNet, the output convolution's weights of a DynUNet or
            SegResNet), so an untrained network predicts what the backbone does. The default fits our label maps
            (cohort.synth): background and liver share indices, and the tumour starts from the upstream lesion class
            (4), where the backbone has one. A class beyond the list, an index of -1 or one the backbone does not
            have starts at zero. An int n (older checkpoints) means (0, …, n - 1).
        roi_size: patch size for training and sliding-window inference (a multiple of the backbone's
            down-sampling factor).
        cascade: the geometry the network was trained with and segments in (:class:`models.cascade.CascadeConfig`:
            working spacing, stage 1's coarse spacing, the ROI margin, the HU window). The one definition of it: the
            app, its train task and the simulator each build one and hand it here.
        head_kernel: edge of the head's convolution (1 = the method's 1×1×1 head; 3 lets it see a voxel's
            neighbours at full resolution, where the UNet's decoder feature is at half resolution).
        head_reads_image: the head also reads the (windowed) input image at full resolution.
        head_reads_stages: encoder stages whose output (prompted, in prompt mode) the head also reads, upsampled to
            full resolution: a trainable path from the FPUs' shallow features (intensity, edges) to the head that
            does not go through the frozen decoder, which was trained to label lesions as organ.
    """

    num_classes: int = 3
    num_prompts: int = 3
    prompt_grid: int = 4
    fpu_rank: int = 8
    prompt_stages: tuple[int, ...] | None = None
    mode: Mode = "prompt"
    seed: int = 0
    prompt_init_std: float = 0.5
    inherit_classes: tuple[int, ...] = (0, 1, 4)
    roi_size: tuple[int, int, int] = (48, 48, 48)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    head_kernel: int = 1
    head_reads_image: bool = False
    head_reads_stages: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # JSON / checkpoint round trips give lists; normalise to tuples.
        object.__setattr__(self, "head_reads_stages", tuple(int(s) for s in self.head_reads_stages))
        inherit = self.inherit_classes
        object.__setattr__(
            self, "inherit_classes", tuple(range(inherit)) if isinstance(inherit, int) else tuple(int(c) for c in inherit)
        )
        if self.prompt_stages is not None:
            object.__setattr__(self, "prompt_stages", tuple(int(s) for s in self.prompt_stages))
        object.__setattr__(self, "roi_size", tuple(int(s) for s in self.roi_size))
        if isinstance(self.cascade, dict):
            object.__setattr__(self, "cascade", CascadeConfig.from_dict(self.cascade))
        if self.mode not in ("prompt", "finetune"):
            raise ModelError(f"unknown mode {self.mode!r}; expected prompt or finetune")
        if self.num_classes < 2 or self.num_prompts < 1 or self.prompt_grid < 1 or self.fpu_rank < 1:
            raise ModelError(
                "need num_classes >= 2, num_prompts, prompt_grid, fpu_rank >= 1; got "
                f"{self.num_classes}, {self.num_prompts}, {self.prompt_grid}, {self.fpu_rank}"
            )
        if self.head_kernel < 1 or self.head_kernel % 2 == 0:
            raise ModelError(f"head_kernel must be odd and >= 1, got {self.head_kernel}")
        if len(self.roi_size) != 3:
            raise ModelError(f"roi_size needs 3 entries, got {self.roi_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists/str/numbers (safe for JSON and ``weights_only`` checkpoints)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SLPTConfig:
        """Inverse of :meth:`to_dict`. Checkpoints from before the cascade had one owner carry its fields loose
        (``spacing``, ``coarse_spacing``, ``roi_margin_mm``, ``hu_window``): they are gathered into ``cascade``."""
        data = dict(data)
        loose = {new: data.pop(old) for old, new in _LOOSE_CASCADE_KEYS.items() if old in data}
        if loose:
            data["cascade"] = {**CascadeConfig().to_dict(), **data.get("cascade", {}), **loose}
        return config_from_dict(cls, data, "SLPT")


#: SLPTConfig keys of older checkpoints -> their CascadeConfig field.
_LOOSE_CASCADE_KEYS = {
    "spacing": "spacing", "coarse_spacing": "coarse_spacing", "roi_margin_mm": "margin_mm", "hu_window": "hu_window",
}


class SLPTNet(nn.Module):
    """Prompt-tuned (or fine-tuned) segmentation network around a MONAI backbone.

    Takes ownership of ``backbone``: in prompt mode its parameters are frozen in place, in fine-tune mode
    they are trained in place.

    Args:
        backbone: a MONAI UNet / SegResNet / DynUNet with pre-trained weights.
        config: see :class:`SLPTConfig`.
    """

    def __init__(self, backbone: nn.Module, config: SLPTConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.adapter: BackboneAdapter = adapt_backbone(backbone)
        bad_roi = [s for s in config.roi_size if s % self.adapter.size_divisor]
        if bad_roi:
            raise ModelError(f"roi_size {config.roi_size} must be multiples of {self.adapter.size_divisor}")

        num_stages = len(self.adapter.stages)
        first = self.adapter.full_resolution_stages if self.adapter.full_resolution_stages < num_stages else 0
        stages = tuple(range(first, num_stages)) if config.prompt_stages is None else config.prompt_stages
        if config.mode == "finetune":
            stages = ()
        invalid = [s for s in stages if not 0 <= s < num_stages]
        if invalid or len(set(stages)) != len(stages):
            raise ModelError(f"prompt_stages {stages} must be distinct indices in 0..{num_stages - 1}")
        self.prompt_stages: tuple[int, ...] = tuple(sorted(stages))
        # Keyed by stage index as str (ModuleDict keys must be strings).
        self.prompts = nn.ModuleDict({
            str(s): PromptBank(
                config.num_prompts, self.adapter.channels[s], config.prompt_grid,
                seed=config.seed + 1000 * s, init_std=config.prompt_init_std,
            )
            for s in self.prompt_stages
        })
        self.fpus = nn.ModuleDict({
            str(s): FeaturePromptUpdater(self.adapter.channels[s], config.fpu_rank) for s in self.prompt_stages
        })
        image_channels = backbone_in_channels(backbone) if config.head_reads_image else 0
        if any(not 0 <= s < num_stages for s in config.head_reads_stages):
            raise ModelError(f"head_reads_stages {config.head_reads_stages} must be indices in 0..{num_stages - 1}")
        stage_channels = sum(self.adapter.channels[s] for s in config.head_reads_stages)
        self.head = nn.Conv3d(
            self.adapter.head_channels + image_channels + stage_channels, config.num_classes,
            kernel_size=config.head_kernel,
            padding=config.head_kernel // 2,
        )
        if self.adapter.head_logit_channels or self.adapter.output_conv is not None:
            self._inherit_upstream_classes()

        for p in self.backbone.parameters():
            p.requires_grad_(config.mode == "finetune")
        self.train(self.training)

    @property
    def mode(self) -> Mode:
        return self.config.mode

    @property
    def num_prompts(self) -> int:
        """K: prompt sets run by :meth:`forward_all` (1 in fine-tune mode)."""
        return self.config.num_prompts if self.mode == "prompt" else 1

    def train(self, mode: bool = True) -> SLPTNet:
        """Set training mode; in prompt mode the backbone (norm layers, dropout) always stays in eval."""
        super().train(mode)
        if self.mode == "prompt":
            self.backbone.eval()
        return self

    def tunable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates: prompts + FPUs + head (prompt mode) or all (fine-tune)."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, float]:
        """``{"total_params", "tunable_params", "tunable_fraction", "num_prompts"}``."""
        total = sum(p.numel() for p in self.parameters())
        tunable = sum(p.numel() for p in self.tunable_parameters())
        return {
            "total_params": total,
            "tunable_params": tunable,
            "tunable_fraction": tunable / total,
            "num_prompts": self.num_prompts,
        }

    def forward(self, x: torch.Tensor, prompt_index: torch.Tensor | None = None) -> torch.Tensor:
        """Segment with one prompt per batch item.

        Args:
            x: (B, in_channels, D, H, W) preprocessed images, spatial sizes multiples of the size divisor.
            prompt_index: (B,) long, prompt k of each item; required in prompt mode, ignored in fine-tune.

        Returns:
            logits (B, num_classes, D, H, W).
        """
        if self.mode == "prompt":
            if prompt_index is None:
                raise ModelError("prompt mode needs a prompt_index per batch item")
            prompt_index = torch.as_tensor(prompt_index, dtype=torch.long, device=x.device)
            if prompt_index.shape != (x.shape[0],):
                raise ModelError(f"prompt_index must have shape ({x.shape[0]},), got {tuple(prompt_index.shape)}")
            if len(prompt_index) and not 0 <= int(prompt_index.min()) <= int(prompt_index.max()) < self.num_prompts:
                raise ModelError(f"prompt_index values must lie in 0..{self.num_prompts - 1}")
        with self._hooks(prompt_index) as captured:
            logits = self.backbone(x)
        stages = [captured[f"stage{s}"] for s in self.config.head_reads_stages]
        return self._apply_head(self._head_parts(captured["feature"], logits, x, stages), logits.shape[2:])

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Run all K prompts in ONE batched pass: (B, C_in, *S) -> logits (K, B, num_classes, *S)."""
        k, b = self.num_prompts, x.shape[0]
        repeated = x.repeat(k, *([1] * (x.dim() - 1)))  # item k*B + i is image i with prompt k
        prompt_index = torch.arange(k, device=x.device).repeat_interleave(b)
        return self(repeated, prompt_index).reshape(k, b, -1, *x.shape[2:])

    @contextmanager
    def _hooks(self, prompt_index: torch.Tensor | None) -> Iterator[dict[str, torch.Tensor]]:
        """Install the prompt and head-feature hooks for the duration of one backbone call."""
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if self.mode == "prompt":
            for s in self.prompt_stages:
                handles.append(self.adapter.stages[s].register_forward_hook(self._prompt_hook(s, prompt_index)))
        def keep_input(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured["feature"] = inputs[0]

        def keep_stage(stage: int):
            def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                captured[f"stage{stage}"] = output  # registered after the prompt hook: the prompted feature

            return hook

        handles.append(self.adapter.head_source.register_forward_pre_hook(keep_input))
        for s in self.config.head_reads_stages:
            handles.append(self.adapter.stages[s].register_forward_hook(keep_stage(s)))
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def _prompt_hook(self, stage: int, prompt_index: torch.Tensor):
        bank, fpu = self.prompts[str(stage)], self.fpus[str(stage)]

        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], feature: torch.Tensor) -> torch.Tensor:
            prompt = bank(prompt_index, tuple(feature.shape[2:])).to(feature.dtype)
            prompted, _updated = fpu(feature, prompt)
            return prompted

        return hook

    def _head_parts(
        self, feature: torch.Tensor, logits: torch.Tensor, image: torch.Tensor, stages: Sequence[torch.Tensor] = ()
    ) -> list[torch.Tensor]:
        """What the head reads, in the order of its input channels, each at its own resolution: the decoder feature
        (B, head_channels - head_logit_channels, *s), when the adapter says so the backbone's logits
        (B, out_channels, *S), with ``head_reads_image`` the input image and the ``head_reads_stages`` encoder
        features."""
        parts = [feature, logits] if self.adapter.head_logit_channels else [feature]
        if self.config.head_reads_image:
            parts.append(image.to(feature.dtype))
        return parts + [stage.to(feature.dtype) for stage in stages]

    def _apply_head(self, parts: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """The head over ``parts`` (:meth:`_head_parts`) at the output size ``size``: (B, num_classes, *size).

        A 1×1×1 head is a per-voxel linear map and trilinear upsampling a per-channel one, so they commute: each
        coarser part goes through its slice of the head's weights at its own resolution and only the num_classes
        result is upsampled. For a UNet that upsamples 3 channels instead of 2·C_0 (a quarter of a prompt-tuning
        step on the CPU otherwise: docs/design.md, "Prompts and FPU"). A wider head upsamples its inputs first.
        """
        def full_size(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[2:] == tuple(size) else nn.functional.interpolate(
                t, size=tuple(size), mode="trilinear", align_corners=False)

        if self.config.head_kernel != 1:
            return self.head(torch.cat([full_size(p) for p in parts], dim=1))
        out, first = None, 0
        for part in parts:
            weight = self.head.weight[:, first:first + part.shape[1]]
            first += part.shape[1]
            term = full_size(nn.functional.conv3d(part, weight))
            out = term if out is None else out + term
        return out + self.head.bias.to(out.dtype).view(1, -1, *([1] * (out.dim() - 2)))

    def _inherit_upstream_classes(self) -> None:
        """Downstream class c starts as upstream class ``inherit_classes[c]``: a head that reads the logits copies that
        logit, one that reads the decoder feature copies the backbone's output convolution for it. Every other weight
        starts at 0, so the untrained network predicts the upstream classes it inherits (and nothing else)."""
        adapter, centre = self.adapter, self.config.head_kernel // 2
        upstream_classes = adapter.head_logit_channels or adapter.output_conv.out_channels
        sources = [
            (c, u) for c, u in enumerate(self.config.inherit_classes[: self.config.num_classes])
            if 0 <= u < upstream_classes
        ]
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            for c, u in sources:
                if adapter.head_logit_channels:
                    offset = adapter.head_channels - adapter.head_logit_channels  # logits follow the decoder feature
                    self.head.weight[c, offset + u, centre, centre, centre] = 1.0
                else:
                    conv = adapter.output_conv
                    self.head.weight[c, : conv.in_channels, centre, centre, centre] = conv.weight[u, :, 0, 0, 0]
                    if conv.bias is not None:
                        self.head.bias[c] = conv.bias[u]


def backbone_in_channels(backbone: nn.Module) -> int:
    """Image channels a MONAI backbone takes (its first convolution's input channels)."""
    first = next(m for m in backbone.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)))
    return first.in_channels
