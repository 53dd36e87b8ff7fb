"""`slpt simulate` end to end on a tiny cohort (16³, tiny random-weight backbone, the smoke profile's few steps)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.backbone import BackboneConfig, build_backbone, save_backbone
from cohort.synth import generate_cohort

torch.set_num_threads(1)

REQUIRED_COLUMNS = {
    "seed", "strategy", "tuning", "round", "n_labeled", "tumour_dice", "tumour_dice_global", "liver_dice",
    "train_time_s", "tunable_params",
}


def simulate(*args: str):
    from app.cli import cli

    return CliRunner().invoke(cli, ["simulate", *args])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(a 12-case 16³ MSD cohort, a tiny random-weight backbone checkpoint)."""
    root = tmp_path_factory.mktemp("simulate")
    generate_cohort(root / "data", cases=12, seed=3, size=16, progress=False)
    torch.manual_seed(0)
    config = BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    save_backbone(build_backbone(config), config, root / "backbone.pt")
    return root / "data", root / "backbone.pt"


def run_args(inputs: tuple[Path, Path], out: Path) -> list[str]:
    data, backbone = inputs
    return [
        "--data", str(data), "--backbone", str(backbone), "--profile", "smoke", "--strategies", "tesla,random",
        "--seeds", "1", "--rounds", "1", "--budget", "0.3", "--tuning", "prompt,finetune", "--out", str(out),
    ]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def finished_run(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "study"
    result = simulate(*run_args(inputs, out))
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return out


def test_a_run_writes_split_results_curves_and_report(finished_run: Path, inputs):
    split = json.loads((finished_run / "split.json").read_text())
    assert not set(split["pool"]) & set(split["test"])
    assert len(split["pool"]) + len(split["test"]) == 12

    columns, rows = read_rows(finished_run / "results.csv")
    assert REQUIRED_COLUMNS <= set(columns)
    test_groups = {json.loads((inputs[0] / "dataset.json").read_text())["slpt_groups"][c] for c in split["test"]}
    assert {f"dice_{g}" for g in test_groups} <= set(columns)
    # 1 seed × 2 tunings × (full-data reference + 2 strategies × 1 round)
    assert sorted((r["strategy"], r["tuning"]) for r in rows) == sorted(
        (s, t) for s in ("full", "tesla", "random") for t in ("prompt", "finetune")
    )
    for row in rows:
        labeled = row["labeled"].split(";")
        assert set(labeled) <= set(split["pool"])  # never a test case
        expected = len(split["pool"]) if row["strategy"] == "full" else round(0.3 * len(split["pool"]))
        assert int(row["n_labeled"]) == len(labeled) == expected
        for metric in ("tumour_dice", "tumour_dice_global", "liver_dice"):
            assert 0.0 <= float(row[metric]) <= 1.0
    prompt = next(r for r in rows if r["tuning"] == "prompt")
    finetune = next(r for r in rows if r["tuning"] == "finetune")
    assert int(prompt["tunable_params"]) < int(prompt["total_params"])  # frozen backbone
    assert int(finetune["tunable_params"]) == int(finetune["total_params"])

    assert (finished_run / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (finished_run / "report.md").read_text()
    for heading in (
        "## Results", "full-data Dice", "## Targets", "TESLA − baselines, tumour Dice", "| tesla − random |",
        "Prompt tuning − fine-tuning, tumour Dice", "acquisition group", "## Liver Dice", "TESLA − baselines, liver Dice",
    ):
        assert heading in report
    assert "| prompt | tesla | 0 |" in report
    # Every target is stated with its verdict, right after its name; a reference that learned no tumour meets none.
    targets = report.split("## Targets")[1].split("###")[0]
    verdicts = {}
    for target in ("Floor", "of full-data prompt tuning", "prompt tuning ≥ fine-tuning", "TESLA > random"):
        line = next(line for line in targets.splitlines() if target in line)
        verdict = re.search(r": (met|\*\*missed\*\*) \(", line)
        assert verdict, line
        verdicts[target] = verdict[1]
    if "did not learn tumours" in targets:
        assert set(verdicts.values()) == {"**missed**"}


def test_a_rerun_resumes_without_duplicating_rows(finished_run: Path, inputs):
    results = finished_run / "results.csv"
    columns, rows = read_rows(results)
    # Simulate an interruption: the last two rows were never written.
    with results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[:-2])

    result = simulate(*run_args(inputs, finished_run))
    assert result.exit_code == 0, result.output
    _, resumed = read_rows(results)
    keys = [(r["seed"], r["strategy"], r["tuning"], r["round"]) for r in resumed]
    assert len(keys) == len(set(keys)) == len(rows)
    assert set(keys) == {(r["seed"], r["strategy"], r["tuning"], r["round"]) for r in rows}
    # Rows already present were kept as they were, not recomputed.
    assert resumed[: len(rows) - 2] == rows[:-2]

    again = simulate(*run_args(inputs, finished_run))
    assert again.exit_code == 0
    assert read_rows(results)[1] == resumed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--strategies": "tesla,bogus"}, "known strategies: tesla, random"),
        ({"--budget": "0"}, "budget"),
        ({"--budget": "1"}, "budget"),
        ({"--tuning": "lora"}, "prompt and/or finetune"),
    ],
)
def test_bad_study_options_fail_clearly_before_any_work(inputs, tmp_path: Path, change: dict, message: str):
    args = run_args(inputs, tmp_path / "out")
    for option, value in change.items():
        args[args.index(option) + 1] = value
    result = simulate(*args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_data_folder_fails_clearly(inputs, tmp_path: Path):
    result = simulate("--data", str(tmp_path / "nowhere"), "--backbone", str(inputs[1]), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0
    assert "nowhere" in result.stderr and "not a folder" in result.stderr


@pytest.mark.parametrize("source", [[], ["--synthetic", "--data", "DATA"]])
def test_exactly_one_of_data_and_synthetic(inputs, tmp_path: Path, source: list[str]):
    args = [str(inputs[0]) if a == "DATA" else a for a in source]
    result = simulate(*args, "--out", str(tmp_path / "o"))
    assert result.exit_code != 0
    assert "exactly one of --data DIR and --synthetic" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_budget_too_small_for_the_rounds_fails_clearly(inputs, tmp_path: Path):
    args = run_args(inputs, tmp_path / "out")
    args[args.index("--rounds") + 1] = "5"
    result = simulate(*args)
    assert result.exit_code != 0
    assert "fewer than the 5 rounds" in result.stderr
    assert not (tmp_path / "out" / "results.csv").exists()
