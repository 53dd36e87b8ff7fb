"""`slpt bench train`: the byte counters, the verdicts, and the whole benchmark run as a user runs it (tiny)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from bench.harness import Environment
from bench.train import (
    FINETUNE,
    PROMPT_ALL,
    PROMPT_DEEP,
    BackboneFacts,
    BenchConfig,
    BenchResult,
    VariantResult,
    format_verdicts,
    gradient_bytes,
    optimizer_state_bytes,
)


def slpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slpt", *args], capture_output=True, text=True, timeout=300)


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The markdown table as {variant: {column header: cell}}."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(headers, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["variant"]: row for row in rows}


def ratio_percent(cell: str) -> float:
    """``"819.6 KiB (5.9%)"`` -> 5.9."""
    match = re.search(r"\(([\d.]+)%\)", cell)
    assert match, cell
    return float(match.group(1))


def test_byte_counters_sum_gradients_and_adamw_state():
    torch.set_num_threads(1)
    weight = torch.nn.Parameter(torch.ones(3, 4))  # float32: 48 bytes
    bias = torch.nn.Parameter(torch.ones(5, dtype=torch.float16))  # 10 bytes
    frozen = torch.nn.Parameter(torch.ones(100), requires_grad=False)
    assert gradient_bytes([weight, bias, frozen]) == 0  # no backward yet

    optimizer = torch.optim.AdamW([weight, bias], lr=0.1)
    assert optimizer_state_bytes(optimizer) == 0  # AdamW creates its state lazily, at the first step
    (weight.sum() + bias.float().sum()).backward()
    optimizer.step()

    assert gradient_bytes([weight, bias, frozen]) == 48 + 10
    # Per parameter: exp_avg and exp_avg_sq in the parameter's dtype, plus a float32 step counter.
    assert optimizer_state_bytes(optimizer) == 2 * 48 + 4 + 2 * 10 + 4


def fake_variant(name: str, state_bytes: int, version_bytes: int, step_s: float) -> VariantResult:
    return VariantResult(
        name=name, mode="prompt", prompt_stages=[2, 3], total_params=1000, trainable_params=100,
        step_times_s=[step_s, step_s * 3, step_s], gradient_bytes=state_bytes // 2, optimizer_bytes=state_bytes // 2,
        peak_memory_bytes=10, memory_growth_bytes=5, memory_kind="peak RSS", version_bytes=version_bytes,
        batch_fingerprint=1.0,
    )


def test_verdicts_compare_each_prompt_variant_with_fine_tuning():
    env = Environment(date="d", load=None, cpu="cpu", cores=1, os="os", python="3", device="cpu", threads=1)
    result = BenchResult(
        BenchConfig(),
        env,
        BackboneFacts(backbone="unet", num_stages=4),
        [
            fake_variant(FINETUNE, state_bytes=1000, version_bytes=1000, step_s=1.0),
            fake_variant(PROMPT_ALL, state_bytes=200, version_bytes=50, step_s=1.5),  # state 20 %: missed; slower
            fake_variant(PROMPT_DEEP, state_bytes=80, version_bytes=100, step_s=0.5),  # all met (10 % is allowed)
        ],
    )
    verdicts = format_verdicts(result).splitlines()
    assert verdicts == [
        f"- {PROMPT_ALL}: gradients + optimizer state 20.0% of fine-tuning (target ≤ 10%): MISSED",
        f"- {PROMPT_ALL}: published version 5.0% of fine-tuning (target ≤ 10%): met",
        f"- {PROMPT_ALL}: median step time 150.0% of fine-tuning (target ≤ 100%): MISSED",
        f"- {PROMPT_DEEP}: gradients + optimizer state 8.0% of fine-tuning (target ≤ 10%): met",
        f"- {PROMPT_DEEP}: published version 10.0% of fine-tuning (target ≤ 10%): met",
        f"- {PROMPT_DEEP}: median step time 50.0% of fine-tuning (target ≤ 100%): met",
    ]


def test_bench_train_end_to_end(tmp_path: Path):
    out = tmp_path / "results" / "t.md"
    result = slpt("bench", "train", "--size", "16", "--batch", "1", "--warmup", "1", "--steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in result.stdout
    assert "slpt bench train --size 16 --batch 1 --warmup 1 --steps 2" in report
    assert "torch " in report and "Device:" in report and "torch threads" in report
    assert "the same 3 random patches of 16³ voxels" in report

    rows = table_rows(report)
    assert list(rows) == [FINETUNE, PROMPT_ALL, PROMPT_DEEP]
    assert rows[PROMPT_ALL]["prompt stages"] == "0, 1, 2, 3"
    assert rows[PROMPT_DEEP]["prompt stages"] == "2, 3"  # the deeper half of the default UNet's 4 stages
    for name in (PROMPT_ALL, PROMPT_DEEP):
        row = rows[name]
        assert ratio_percent(row["gradients + optimizer state"]) < 10.0
        assert ratio_percent(row["published version"]) < 10.0
        assert ratio_percent(row["trainable params"]) < 10.0
    # Fewer prompted stages, fewer trainable parameters and a smaller version.
    assert ratio_percent(rows[PROMPT_DEEP]["published version"]) < ratio_percent(rows[PROMPT_ALL]["published version"])
    assert "median step time" in report and ("met" in report or "MISSED" in report)


def test_bench_train_rejects_bad_arguments_before_measuring(tmp_path: Path):
    out = tmp_path / "t.md"
    result = slpt("bench", "train", "--steps", "0", "--device", "tpu", "--out", str(out))
    assert result.returncode != 0
    assert "--steps must be at least 1, got 0" in result.stderr
    assert "--device must be one of auto, cpu, cuda, got 'tpu'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bench_train_on_a_bundle_backbone(tmp_path: Path):
    from tests.models.test_bundle_backbone import whole_body_like

    bundle = whole_body_like(tmp_path / "wholeBody_ct_segmentation")
    out = tmp_path / "t.md"
    result = slpt("bench", "train", "--size", "16", "--batch", "1", "--warmup", "1", "--steps", "1",
                  "--backbone", str(bundle), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "wholeBody_ct_segmentation" in report and "segresnet" in report
    rows = table_rows(report)
    assert rows[PROMPT_ALL]["prompt stages"] == "1, 2"  # its 3 down layers; the full-resolution one gets no prompt
    assert ratio_percent(rows[PROMPT_ALL]["trainable params"]) < 100.0
    missing = slpt("bench", "train", "--backbone", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.md"))
    assert missing.returncode != 0 and "--backbone" in missing.stderr and "does not exist" in missing.stderr
