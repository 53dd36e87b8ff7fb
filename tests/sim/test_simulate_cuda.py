"""The study on CUDA: where a GPU is present, training runs there (float16 autocast) from worker processes.

Runs only where CUDA is present (``scripts/gpu_smoke.sh`` on a GPU machine); the same path on the CPU is
tests/sim/test_simulate.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.sim.test_simulate import inputs, read_rows, run_args, simulate  # noqa: F401 (the fixture)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present"),
]


def test_a_study_runs_on_cuda_from_worker_processes(inputs, tmp_path: Path):  # noqa: F811
    result = simulate(*run_args(inputs, tmp_path / "study"), "--workers", "2")
    assert result.exit_code == 0, result.output + (result.stderr or "")
    _, rows = read_rows(tmp_path / "study" / "results.csv")
    assert rows and all(math.isfinite(float(row["liver_dice"])) for row in rows)
