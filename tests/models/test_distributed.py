"""Data-parallel training (models.distributed) for real: two CPU processes with gloo, the path NCCL takes on GPUs."""

from __future__ import annotations

import copy

import torch

from models.backbone import build_backbone
from models.distributed import train_data_parallel, train_on_devices, training_gpus
from models.slpt import SLPTConfig, SLPTNet
from models.training import TrainConfig, train_prompts
from tests.models.conftest import GEOMETRY, ROI, TINY

STEPS = 12


def fresh_model() -> SLPTNet:
    torch.manual_seed(0)
    return SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))


def tunable(model: SLPTNet) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_two_ranks_train_one_model_with_averaged_gradients(tiny_cases):
    cfg = TrainConfig(steps=STEPS, seed=3, device="cpu")
    untrained = fresh_model()
    before = tunable(untrained)
    reports: list[int] = []
    parallel = copy.deepcopy(untrained)
    result = train_data_parallel(parallel, tiny_cases, cfg, world_size=2, backend="gloo",
                                 progress=lambda done, total, loss: reports.append(done))
    alone = copy.deepcopy(untrained)
    train_prompts(alone, tiny_cases, cfg)

    assert result.steps == STEPS and len(result.losses) == STEPS and result.device == "2xcpu"
    assert reports == list(range(1, STEPS + 1))  # rank 0's progress reached this process, every step
    after, single = tunable(parallel), tunable(alone)
    assert any(not torch.equal(before[name], after[name]) for name in before)  # it trained
    # Rank 1's patches moved the weights too: the averaged run differs from rank 0's patches alone.
    assert any(not torch.allclose(single[name], after[name]) for name in before)
    # The frozen backbone stayed frozen on every rank.
    assert all(torch.equal(a, b) for a, b in zip(untrained.backbone.state_dict().values(),
                                                  parallel.backbone.state_dict().values()))


def test_one_device_trains_in_this_process(tiny_cases):
    assert training_gpus("cpu") == 0
    result = train_on_devices(fresh_model(), tiny_cases, TrainConfig(steps=2, device="cpu"), gpus=training_gpus("cpu"))
    assert result.device == "cpu" and result.steps == 2
