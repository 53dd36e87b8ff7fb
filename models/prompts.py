"""Visual prompts and the feature-aware prompt updater (FPU) (docs/design.md, "Prompts and FPU").

For an encoder stage s with C_s channels there are K learnable prompts P[k, s] (each C_s × g × g × g) and
one FPU shared by those K prompts. Given the frozen stage output F (B, C_s, d, h, w) and the prompt index
of each batch item, the FPU

1. resizes the item's prompt to (d, h, w) (trilinear),
2. makes it image-aware: ``P' = P + attention(F) * P``, with channel attention from globally pooled F,
3. prompts the feature: ``F' = F + gate_s * conv_block([F ; P'])``.

Our interpretation of "the updated prompt flows on": the image-aware prompt P' (not the static P) is the
one concatenated with F, so the feature is prompted by a prompt that has seen the image. ``gate_s`` is a
per-channel vector initialised to zero, so an untrained SLPT reproduces the frozen backbone exactly.

``conv_block`` is kept light: a depthwise 3×3×3 convolution over [F ; P'] (2·C_s channels), then a
low-rank pointwise bottleneck 2·C_s → r → C_s. A dense 1×1×1 conv on [F ; P'] at a 128-channel bottleneck
alone would cost 2·128² ≈ 33 k parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptBank(nn.Module):
    """K learnable prompts for one stage: a parameter of shape (K, C, g, g, g).

    Prompt k is drawn from N(0, init_std²) with its own generator seeded ``seed + k``, so the K prompt
    sets start different and reproducibly.
    """

    def __init__(self, num_prompts: int, channels: int, grid: int, seed: int, init_std: float) -> None:
        super().__init__()
        prompts = []
        for k in range(num_prompts):
            generator = torch.Generator().manual_seed(seed + k)
            prompts.append(torch.randn(channels, grid, grid, grid, generator=generator) * init_std)
        self.prompts = nn.Parameter(torch.stack(prompts))

    def forward(self, prompt_index: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """Prompts of the batch items, resized: (B,) long -> (B, C, *size)."""
        selected = self.prompts[prompt_index]
        return F.interpolate(selected, size=size, mode="trilinear", align_corners=False)


class FeaturePromptUpdater(nn.Module):
    """The FPU of one stage (shared by the K prompts of that stage).

    Args:
        channels: C_s, channels of the stage output.
        rank: width r of the low-rank pointwise bottleneck and of the channel attention.
    """

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        both = 2 * channels
        self.attention = nn.Sequential(
            nn.Linear(channels, rank), nn.ReLU(inplace=True), nn.Linear(rank, channels), nn.Sigmoid()
        )
        self.conv_block = nn.Sequential(
            nn.Conv3d(both, both, kernel_size=3, padding=1, groups=both),
            nn.Conv3d(both, rank, kernel_size=1),
            nn.GELU(),
            nn.Conv3d(rank, channels, kernel_size=1),
        )
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1, 1))

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt one stage.

        Args:
            feature: F, (B, C, d, h, w), frozen stage output.
            prompt: P, (B, C, d, h, w), already resized to the feature map.

        Returns:
            (F', P'): prompted feature and image-aware prompt, both (B, C, d, h, w).
        """
        weights = self.attention(feature.mean(dim=(2, 3, 4)))[..., None, None, None]
        updated = prompt + weights * prompt
        delta = self.conv_block(torch.cat([feature, updated], dim=1))
        return feature + self.gate * delta, updated
