"""`slpt bench infer`: a tiny run as a user runs it (a tiny backbone from a file, a coarse 12 mm working spacing),
the report's table, ratio and verdicts recomputed from its seconds, the random-backbone note, and bad arguments.
Wall times are never asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.harness import Environment
from bench.infer import (
    CASCADE,
    PHASES,
    TARGET_CPU_SECONDS,
    TARGET_SPEEDUP,
    WHOLE_VOLUME,
    InferBenchConfig,
    InferBenchResult,
    ModelFacts,
    RowResult,
    Volume,
    format_report,
    format_verdicts,
    window_count,
)

SHAPE, SPACING = (64, 60, 32), (6.0, 6.0, 10.0)


def slpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slpt", *args], capture_output=True, text=True, timeout=600)


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The first markdown table as {row: {column header: cell}}."""
    lines = []
    for line in report.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(headers, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["row"]: row for row in rows}


def check_ratio_and_verdicts(report: str, device: str = "cpu") -> None:
    """The printed ratio and both verdicts follow from the printed median seconds."""
    rows = table_rows(report)
    cascade_s = float(rows[CASCADE]["time to label: median (s)"])
    whole_s = float(rows[WHOLE_VOLUME]["time to label: median (s)"])
    printed = float(re.search(r"Ratio whole-volume ÷ cascade: ([\d.]+)×", report).group(1))
    # Seconds are printed to 1 ms and the ratio to 0.01.
    recomputed = whole_s / cascade_s
    assert printed == pytest.approx(recomputed, abs=0.006 + recomputed * 0.001 / min(cascade_s, whole_s))

    speed = re.search(rf"Goal: cascade ≥ {TARGET_SPEEDUP:.0f}× faster than whole-volume — (met|MISSED): ([\d.]+)×", report)
    assert speed and float(speed.group(2)) == printed
    assert speed.group(1) == ("met" if printed >= TARGET_SPEEDUP else "MISSED")
    cpu = re.search(rf"Goal: cascade ≤ {TARGET_CPU_SECONDS:.0f} s per volume on CPU — (met|MISSED|not applicable)"
                    r"(?:: median ([\d.]+) s)?", report)
    assert cpu
    if device == "cpu":
        assert float(cpu.group(2)) == cascade_s
        assert cpu.group(1) == ("met" if cascade_s <= TARGET_CPU_SECONDS else "MISSED")
    else:
        assert cpu.group(1) == "not applicable"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A two-stage UNet with random weights, saved the way `slpt pretrain` saves one (with its JSON)."""
    import torch

    from models.backbone import BackboneConfig, build_backbone, save_backbone

    config = BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "backbone.pt"
    save_backbone(build_backbone(config), config, path, {"val_dice": {"liver": 0.42}, "spacing": [12.0] * 3})
    return path


def test_bench_infer_end_to_end(tmp_path: Path, tiny_backbone: Path):
    out = tmp_path / "results" / "infer.md"
    args = ["bench", "infer", "--shape", ",".join(map(str, SHAPE)), "--spacing", ",".join(map(str, SPACING)),
            "--working-spacing", "12", "--roi", "16", "--backbone", str(tiny_backbone), "--repeats", "1",
            "--threads", "1", "--device", "cpu", "--out", str(out)]
    result = slpt(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in result.stdout
    assert f"slpt {' '.join(args)}" in report
    assert "Machine: " in report and "torch threads" in report and "Device: cpu;" in report and "torch 2" in report
    assert "64 × 60 × 32 voxels at 6 × 6 × 10 mm (384 × 360 × 320 mm)" in report
    assert f"`{tiny_backbone}` (unet, channels 4-8; held-out liver Dice 0.420, pre-trained at 12 mm)" in report
    assert "working spacing 12 mm, stage 1 at 24 mm" in report
    assert "over 1 requests after one untimed warm-up request" in report
    assert "randomly initialised" not in report  # the backbone came from a file

    rows = table_rows(report)
    assert list(rows) == [CASCADE, WHOLE_VOLUME]
    for row in rows.values():
        assert row["label shape, affine"] == "64×60×32, same as the image"
        assert re.fullmatch(r"[\d.]+–[\d.]+", row["range (s)"])
        assert re.fullmatch(r"[\d.]+ (MiB|GiB)", row["peak RSS"])
    # The whole-volume row segments the whole working grid: 384 × 360 × 320 mm at 12 mm.
    assert rows[WHOLE_VOLUME]["region segmented (working grid)"] == "32×30×27 voxels (384×360×324 mm)"
    assert rows[WHOLE_VOLUME]["sliding windows"] == str(window_count((32, 30, 27), (16, 16, 16)))
    check_ratio_and_verdicts(report)

    stage1 = re.search(r"ROI found: (true|false) — liver seen by stage 1: (\d+) ml .*?: voxels \[[\d, ]+\]–\[[\d, ]+\], "
                       r"(\d+) × (\d+) × (\d+) = ([\d,]+) voxels, (\d+) × (\d+) × (\d+) mm", report)
    assert stage1, report
    edges = [int(stage1.group(i)) for i in (3, 4, 5)]
    assert int(stage1.group(6).replace(",", "")) == np.prod(edges)
    assert [int(stage1.group(i)) for i in (7, 8, 9)] == [12 * e for e in edges]
    cascade_region = rows[CASCADE]["region segmented (working grid)"]
    assert cascade_region.startswith("×".join(map(str, edges)) + " voxels")
    assert re.search(r"ROI holds all of the ground-truth liver: (yes|no)", report)
    assert "Both labels on the image's grid (shape 64×60×32 and affine of the written file): yes" in report
    assert re.search(r"Liver Dice \(label ≥ 1\) against the generated ground truth: .*\d\.\d{3}", report)
    for phase in PHASES:
        assert phase in report


def fake_row(name: str, seconds: list[float], found: bool = True) -> RowResult:
    return RowResult(
        name=name, times_s=seconds, phases_s={PHASES[0]: 1.0}, roi_found=found, roi_start=(1, 2, 3),
        roi_stop=(11, 22, 33), roi_liver_ml=900.0, roi_on_image=((0, 0, 0), (40, 40, 40)), working_shape=(50, 50, 50),
        windows=8, rss_before_bytes=2**29, peak_rss_bytes=2**31, cuda_peak_bytes=None, label_shape=(40, 40, 40),
        label_affine=np.eye(4).tolist(), label_counts=[1, 2, 3], label=np.zeros((1, 1, 1), dtype=np.uint8),
    )


def fake_result(cascade_s: list[float], whole_s: list[float], device: str = "cpu", random: bool = False,
                found: bool = True) -> InferBenchResult:
    env = Environment(
        date="2024-01-01 00:00 UTC", load=1.0, cpu="test CPU", cores=2, os="Linux", python="3.11",
        versions={"torch": "2.x", "MONAI": "1.x"}, device=device, device_name="test device", threads=2,
    )
    model = ModelFacts(
        backbone="randomly initialised default backbone" if random else "`bb.pt`", random_backbone=random,
        num_prompts=3, roi_size=(48, 48, 48), spacing=(2.5,) * 3, coarse_spacing=(5.0,) * 3, margin_mm=15.0,
    )
    volume = Volume(path="x.nii.gz", shape=(40, 40, 40), spacing=(0.8, 0.8, 2.5), affine=np.eye(4).tolist(),
                    file_bytes=1000, group="arterial", lesions=True, liver_ml=1000.0,
                    liver_box=((5, 5, 5), (30, 30, 30)), render_s=1.0)
    return InferBenchResult(
        config=InferBenchConfig(), environment=env, model=model, volume=volume,
        rows=[fake_row(CASCADE, cascade_s, found), fake_row(WHOLE_VOLUME, whole_s)],
        liver_dice={CASCADE: 0.9, WHOLE_VOLUME: 0.9}, agreement_dice=0.99, label_equal_fraction=0.999,
    )


@pytest.mark.parametrize("cascade_s, whole_s, verdicts", [
    ([10.0, 12.0, 30.0], [40.0, 36.0, 50.0], ("met", "met")),  # medians 12 and 40: 3.33×
    ([31.0, 29.0, 35.0], [100.0, 100.0, 100.0], ("MISSED", "met")),  # median 31 s: over 30 s
    ([30.0], [89.0], ("met", "MISSED")),  # exactly 30 s is allowed; 2.97× is not 3×
])
def test_verdicts_follow_from_the_medians(cascade_s, whole_s, verdicts):
    lines = format_verdicts(fake_result(cascade_s, whole_s)).splitlines()
    assert lines[1].split(" — ")[1].startswith(verdicts[0])
    assert lines[2].split(" — ")[1].startswith(verdicts[1])
    check_ratio_and_verdicts(format_report(fake_result(cascade_s, whole_s), "slpt bench infer"))


def test_the_cpu_goal_does_not_apply_on_cuda_and_a_random_backbone_is_called_out():
    result = fake_result([1.0], [5.0], device="cuda", random=True, found=False)
    result.rows[0].cuda_peak_bytes = result.rows[1].cuda_peak_bytes = 2**30
    report = format_report(result, "slpt bench infer")
    assert "per volume on CPU — not applicable: measured on cuda" in report
    assert "CUDA peak allocated" in report and "1.00 GiB" in report
    assert "The backbone is randomly initialised (no `--backbone`): stage 1 finds no real liver." in report
    assert "ROI found: false" in report and "(no liver found: the whole volume, the fallback)" in report
    check_ratio_and_verdicts(report, device="cuda")


def test_window_count_matches_monai_sliding_windows():
    import torch
    from monai.inferers import sliding_window_inference

    for shape in [(16, 16, 16), (17, 40, 9), (50, 33, 64)]:
        calls = []

        def predictor(x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return x

        sliding_window_inference(torch.zeros(1, 1, *shape), (16, 16, 16), 1, predictor, overlap=0.25)
        assert window_count(shape, (16, 16, 16)) == sum(calls), shape


def test_bench_infer_rejects_bad_arguments_before_measuring(tmp_path: Path):
    out = tmp_path / "infer.md"
    result = slpt("bench", "infer", "--shape", "512,512", "--out", str(out))
    assert result.returncode != 0
    assert "--shape needs 3 comma-separated integers, got '512,512'" in result.stderr
    assert "Traceback" not in result.stderr

    result = slpt("bench", "infer", "--shape", "4,64,64", "--spacing", "0.8,0.9,2.5", "--repeats", "0",
                  "--device", "tpu", "--backbone", str(tmp_path / "missing.pt"), "--out", str(out))
    assert result.returncode != 0
    for message in ("--shape needs every edge >= 8 voxels, got 4×64×64",
                    "--spacing needs square pixels (dx = dy, axial CT), got (0.8, 0.9, 2.5)",
                    "--repeats must be at least 1, got 0",
                    "--device must be one of auto, cpu, cuda, got 'tpu'",
                    f"--backbone {tmp_path / 'missing.pt'} does not exist"):
        assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bench_infer_names_a_checkpoint_that_does_not_fit(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = slpt("bench", "infer", "--shape", "16,16,16", "--backbone", str(bad), "--device", "cpu")
    assert result.returncode != 0
    assert "error:" in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_infer_on_a_bundle_backbone(tmp_path: Path):
    from tests.models.test_bundle_backbone import whole_body_like

    bundle = whole_body_like(tmp_path / "wholeBody_ct_segmentation")
    out = tmp_path / "infer.md"
    result = slpt("bench", "infer", "--shape", ",".join(map(str, SHAPE)), "--spacing", ",".join(map(str, SPACING)),
                  "--working-spacing", "12", "--roi", "16", "--backbone", str(bundle), "--repeats", "1",
                  "--threads", "1", "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "segresnet from the MONAI bundle wholeBody_ct_segmentation" in report and "pre-trained at 2.5 mm" in report
    for row in table_rows(report).values():
        assert row["label shape, affine"] == "64×60×32, same as the image"


def expected_label_roi(volume_path: str, liver: np.ndarray, working_spacing: float) -> tuple[list[int], list[int]]:
    """The liver label's bounding box on the image's grid, grown by the cascade's margin, on the working grid."""
    import nibabel as nib

    from models.cascade import CascadeConfig, to_working
    from models.geometry import Box, affine_of, box_on_grid

    cascade = CascadeConfig(spacing=(working_spacing,) * 3, coarse_spacing=(2 * working_spacing,) * 3)
    _original, working = to_working(volume_path, cascade)
    box = box_on_grid(Box.of_mask(liver), np.asarray(nib.load(volume_path).affine), affine_of(working), working.shape,
                      margin_mm=cascade.margin_mm)
    assert cascade.margin_mm == 15.0  # the default the benchmark's model uses
    return list(box.start), list(box.stop)


def test_roi_from_label_segments_the_label_box_runs_stage1_and_says_so(tmp_path: Path):
    """A random backbone, `--roi-from-label --no-whole-volume`: stage 2's region is the generated liver's box plus
    the margin on the working grid (not what the random stage 1 found), stage 1 is still timed, and the report
    says where the ROI came from."""
    from bench.infer import CASCADE_FROM_LABEL, PHASE_STAGE1, generate_volume

    out = tmp_path / "infer.md"
    shape, spacing = (96, 96, 40), (4.0, 4.0, 10.0)
    args = ["bench", "infer", "--shape", ",".join(map(str, shape)), "--spacing", ",".join(map(str, spacing)),
            "--working-spacing", "8", "--roi", "16", "--repeats", "1", "--threads", "1", "--device", "cpu",
            "--roi-from-label", "--no-whole-volume", "--out", str(out)]
    result = slpt(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()

    # The same case, generated again: its liver label gives the expected ROI.
    volume, liver = generate_volume(InferBenchConfig(shape=shape, spacing=spacing), tmp_path)
    start, stop = expected_label_roi(volume.path, liver, 8.0)
    used = re.search(r"\*\*ROI from the label \(`--roi-from-label`\)\*\*: stage 2 segmented the generated case's own "
                     r"liver label's bounding box grown by the cascade's 15 mm margin .*?; on the working grid "
                     r"\((\d+) × (\d+) × (\d+) voxels at 8 mm\): voxels (\[[\d, ]+\])–(\[[\d, ]+\])", report)
    assert used, report
    assert (json.loads(used.group(4)), json.loads(used.group(5))) == (start, stop)
    working = [int(used.group(i)) for i in (1, 2, 3)]
    assert any(b - a < w for a, b, w in zip(start, stop, working))  # a box inside the volume, not the fallback

    rows = table_rows(report)
    assert list(rows) == [CASCADE_FROM_LABEL]  # the row's name says it, and no whole-volume row
    edges = [b - a for a, b in zip(start, stop)]
    assert rows[CASCADE_FROM_LABEL]["region segmented (working grid)"].startswith("×".join(map(str, edges)) + " voxels")
    assert rows[CASCADE_FROM_LABEL]["sliding windows"] == str(window_count(edges, (16, 16, 16)))
    assert rows[CASCADE_FROM_LABEL]["label shape, affine"] == "96×96×40, same as the image"
    assert "**with `--roi-from-label`**: the cascade row runs stage 1 as it is" in report
    assert re.search(r"Stage 1 ran as it is, timed within every request, its ROI not used: ROI found: (true|false) — "
                     r"liver seen by stage 1: \d+ ml", report)
    assert "ROI holds all of the ground-truth liver: yes" in report
    assert "stage 2's ROI came from the label" in report  # the random-backbone note says what the time means
    assert re.search(rf"\| {re.escape(PHASE_STAGE1)} \| [\d.]+ s \|", report)  # stage 1 ran in the warm-up
    assert "Ratio whole-volume ÷ cascade: not measured (`--no-whole-volume`)" in report
    assert "faster than whole-volume — not measured" in report


def test_a_request_is_segment_volume_and_roi_from_label_swaps_only_the_roi(tmp_path: Path, tiny_backbone: Path):
    """The bench's request (phases one by one) gives what the server's `segment_volume` gives; with
    `--roi-from-label` it runs the same stage 1 and segments `label_roi` instead."""
    from bench.infer import OVERLAP, RowSpec, build_model, generate_volume, label_roi, request
    from models.cascade import to_working
    from models.inference import segment_volume

    cfg = InferBenchConfig(shape=(64, 60, 32), spacing=(6.0, 6.0, 10.0), backbone=tiny_backbone,
                           working_spacing=12.0, roi=16, device="cpu")
    model, _described, _random = build_model(cfg)
    volume, liver = generate_volume(cfg, tmp_path)
    served = segment_volume(model, volume.path, overlap=OVERLAP)

    plain = request(model, RowSpec(CASCADE, False, cfg, volume, "cpu"))
    assert plain.prediction.roi == plain.stage1 == served.roi
    np.testing.assert_array_equal(plain.prediction.label_on_original(), served.label_on_original())

    from dataclasses import replace

    spec = RowSpec(CASCADE, False, replace(cfg, roi_from_label=True), volume, "cpu")
    assert spec.roi_from_label and not RowSpec(WHOLE_VOLUME, True, spec.bench, volume, "cpu").roi_from_label
    swapped = request(model, spec)
    assert swapped.stage1 == served.roi  # stage 1 ran as it is
    start, stop = expected_label_roi(volume.path, liver, 12.0)
    assert (list(swapped.prediction.roi.box.start), list(swapped.prediction.roi.box.stop)) == (start, stop)
    assert swapped.prediction.roi.box != served.roi.box
    assert swapped.prediction.roi == label_roi(volume, to_working(volume.path, model.config.cascade)[1], 15.0)
    assert swapped.prediction.label_on_original().shape == tuple(volume.shape)
