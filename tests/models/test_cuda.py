"""CUDA code paths: float16 autocast training, batched sliding windows, NCCL data-parallel training.

They run only where CUDA is present (``scripts/gpu_smoke.sh`` on a GPU machine); on the CPU they are skipped with that
reason. Everything they exercise also runs on the CPU in the rest of the suite.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.backbone import build_backbone
from models.device import CUDA_WINDOW_BATCH, window_batch
from models.distributed import train_on_devices, training_gpus
from models.inference import predict
from models.slpt import SLPTConfig, SLPTNet
from models.training import TrainConfig, train_prompts
from tests.models.conftest import GEOMETRY, ROI, TINY, make_case

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present"),
]


def fresh_model() -> SLPTNet:
    torch.manual_seed(0)
    return SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))


def test_amp_training_on_cuda_lowers_the_loss(tiny_cases):
    model = fresh_model()
    result = train_prompts(model, tiny_cases, TrainConfig(steps=60, seed=1, device="cuda"))
    assert result.device.startswith("cuda") and next(model.parameters()).is_cuda
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])
    assert all(np.isfinite(result.losses))  # the gradient scaler kept float16 from overflowing


def test_batched_windows_on_cuda_match_the_cpu():
    assert window_batch(torch.device("cuda")) == CUDA_WINDOW_BATCH > window_batch(torch.device("cpu")) == 1
    image, _ = make_case(5, size=40)
    model = fresh_model().eval()
    on_cpu = predict(copy.deepcopy(model), torch.from_numpy(image))
    on_gpu = predict(model.cuda(), torch.from_numpy(image))  # 8 windows per pass, float16
    assert np.abs(on_cpu.mean_prob - on_gpu.mean_prob).max() < 2e-2
    assert (on_cpu.label == on_gpu.label).mean() > 0.99


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more CUDA devices")
def test_data_parallel_training_on_every_gpu(tiny_cases):
    gpus = training_gpus("cuda")
    result = train_on_devices(fresh_model(), tiny_cases, TrainConfig(steps=20, device="cuda"), gpus=gpus)
    assert result.device == f"{gpus}xcuda:0" and result.steps == 20
