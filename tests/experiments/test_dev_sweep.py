"""The development-cohort sweep that fixes the profiles' schedules: its own cohort seed, the study's code path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import typer
from typer.testing import CliRunner

from experiments.dev_decisions import compare, in_largest_component, tumour_above, without_small_tumours
from experiments.dev_sweep import DEV_CASES, sweep
from experiments.lesion_report import report
from sim.profiles import DEV_COHORT_SEED, PROFILES

torch.set_num_threads(1)


def test_sweep_trains_on_the_development_cohort_and_reports_held_out_dice(tmp_path: Path):
    app = typer.Typer()
    app.command()(sweep)
    args = ["--profile", "smoke", "--tuning", "finetune", "--steps", "2", "--patch", "16", "--batch-per-prompt", "1",
            "--labels", "3", "--seeds", "0,1", "--lr-decay", "cosine", "--out", str(tmp_path),
            "--save", str(tmp_path / "nets")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # Progress bars share the captured stream; each result is one JSON object.
    rows = [json.loads(found) for found in re.findall(r'\{"tuning".*\}$', result.output, re.MULTILINE)]
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        assert row["labels"] == 3 and row["tuning"] == "finetune" and row["steps"] == 2
        assert row["lr_decay"] == "cosine"
        assert 0.0 <= row["liver_dice"] <= 1.0 and row["train_s"] >= 0
        assert set(row["groups"]) <= {"arterial", "delayed", "native_low_dose", "portal_venous"} and row["groups"]
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == ["seed0.pt", "seed1.pt"]
    generator = json.loads((tmp_path / "cohort" / "dataset.json").read_text())["slpt_generator"]
    # The development cohort is its own draw: a seed no profile uses for its study data.
    assert generator == {"seed": DEV_COHORT_SEED, "size": PROFILES["smoke"].size, "cases": DEV_CASES, "upstream": False}
    assert all(DEV_COHORT_SEED not in (p.cohort_seed, p.recipe.upstream_seed, p.split_seed) for p in PROFILES.values())


def test_decision_rules_and_the_lesion_report_read_a_saved_network(tmp_path: Path):
    test_sweep_trains_on_the_development_cohort_and_reports_held_out_dice(tmp_path)
    app = typer.Typer()
    app.command()(compare)
    result = CliRunner().invoke(app, ["--network", str(tmp_path / "nets" / "seed0.pt"), "--out", str(tmp_path),
                                      "--profile", "smoke", "--thresholds", "0.3", "--min-sizes", "5"])
    assert result.exit_code == 0, result.output
    rows = {row["rule"]: row for row in map(json.loads, re.findall(r'^\{"rule".*\}$', result.output, re.MULTILINE))}
    assert set(rows) == {"argmax", "tumour>0.3", "argmax+liver", "tumour>0.3+liver", "argmax+min5", "tumour>0.3+min5"}
    assert all(0.0 <= row["liver_dice"] <= 1.0 for row in rows.values())

    app = typer.Typer()
    app.command()(report)
    result = CliRunner().invoke(app, ["--network", str(tmp_path / "nets" / "seed0.pt"), "--out", str(tmp_path),
                                      "--profile", "smoke"])
    assert result.exit_code == 0, result.output
    (line,) = re.findall(r'^\{"network".*\}$', result.output, re.MULTILINE)
    figures = json.loads(line)
    assert {"tumour_dice", "detection_f1", "fp_cases", "lesions_r<10", "detected_r10-20"} <= set(figures)


def test_a_low_tumour_threshold_adds_tumour_and_the_component_rule_drops_islands():
    probs = np.zeros((3, 6, 6, 6), dtype=np.float32)
    probs[0] = 1.0
    probs[:, :3, :3, :3] = np.array([0.1, 0.6, 0.3])[:, None, None, None]  # liver, tumour at 0.3
    probs[:, 5, 5, 5] = np.array([0.2, 0.1, 0.7])  # a one-voxel tumour island
    assert (probs.argmax(axis=0) == 2).sum() == 1
    low = tumour_above(0.25)(probs)
    assert (low[:3, :3, :3] == 2).all() and low[5, 5, 5] == 2 and (low == 0).sum() == 216 - 28
    kept = in_largest_component(tumour_above(0.25))(probs)
    assert (kept[:3, :3, :3] == 2).all() and kept[5, 5, 5] == 0
    pruned = without_small_tumours(tumour_above(0.25), 2)(probs)
    assert (pruned[:3, :3, :3] == 2).all() and pruned[5, 5, 5] == 1  # the one-voxel island becomes liver
