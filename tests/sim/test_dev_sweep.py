"""The development-cohort sweep that fixes the profiles' schedules: its own cohort seed, the study's code path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import typer
from typer.testing import CliRunner

from sim.dev_sweep import DEV_CASES, sweep
from sim.profiles import DEV_COHORT_SEED, PROFILES

torch.set_num_threads(1)


def test_sweep_trains_on_the_development_cohort_and_reports_held_out_dice(tmp_path: Path):
    app = typer.Typer()
    app.command()(sweep)
    args = ["--profile", "smoke", "--tuning", "finetune", "--steps", "2", "--patch", "16", "--batch-per-prompt", "1",
            "--labels", "3", "--seeds", "0,1", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # Progress bars share the captured stream; each result is one JSON object.
    rows = [json.loads(found) for found in re.findall(r'\{"tuning".*?\}', result.output)]
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        assert row["labels"] == 3 and row["tuning"] == "finetune" and row["steps"] == 2
        assert 0.0 <= row["liver_dice"] <= 1.0 and row["train_s"] >= 0
    generator = json.loads((tmp_path / "cohort" / "dataset.json").read_text())["slpt_generator"]
    # The development cohort is its own draw: a seed no profile uses for its study data.
    assert generator == {"seed": DEV_COHORT_SEED, "size": PROFILES["smoke"].size, "cases": DEV_CASES, "upstream": False}
    assert all(DEV_COHORT_SEED not in (p.cohort_seed, p.upstream_seed, p.split_seed) for p in PROFILES.values())
