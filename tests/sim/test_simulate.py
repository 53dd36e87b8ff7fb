"""`slpt simulate` end to end on a tiny cohort (16³, tiny random-weight backbone, the smoke profile's few steps)."""

from __future__ import annotations

import csv
import hashlib
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
    from slpt.main import cli

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
    # 1 seed × 2 tunings × (full-data and compute-matched references + 2 strategies × 1 round)
    assert sorted((r["strategy"], r["tuning"]) for r in rows) == sorted(
        (s, t) for s in ("full", "full_matched", "tesla", "random") for t in ("prompt", "finetune")
    )
    for row in rows:
        labeled = row["labeled"].split(";")
        assert set(labeled) <= set(split["pool"])  # never a test case
        expected = len(split["pool"]) if row["strategy"].startswith("full") else round(0.3 * len(split["pool"]))
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
    assert "| prompt | tesla | 0 |" in report and "| prompt | full_matched | 0 |" in report
    assert "Labels and compute apart (not a target): every label on the budget's steps gives" in report
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
    # The backbone the rows were measured on is kept beside them, named by its checksum in run.json and the report.
    kept = json.loads((finished_run / "run.json").read_text())["backbone"]
    assert (finished_run / "backbone.pt").read_bytes() == inputs[1].read_bytes()
    assert kept["file"] == "backbone.pt" and len(kept["sha256"]) == 64 and kept["recipe"] is None
    assert f"SHA-256 {kept['sha256'][:12]}" in report


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


# ------------------------------------------------- a study that spans sessions (--records, the kept backbone)

def test_records_live_apart_and_resume_from_a_fresh_run_folder_on_their_kept_backbone(inputs, tmp_path: Path):
    """The records folder (what a long study keeps in git) is enough to resume: it keeps the backbone, so a new run
    folder needs no --backbone, re-makes only the cache, and trains no row already recorded."""
    records = tmp_path / "records"
    first = simulate(*run_args(inputs, tmp_path / "work1"), "--records", str(records))
    assert first.exit_code == 0, first.output
    assert {p.name for p in records.iterdir()} >= {
        "results.csv", "per_case.csv", "split.json", "run.json", "report.md", "backbone.pt", "backbone.json"}
    assert not (tmp_path / "work1" / "results.csv").exists()
    assert list((tmp_path / "work1" / "cache").glob("prepared_*.npz"))  # the re-makeable part stays in --out
    identity = json.loads((records / "run.json").read_text())
    assert identity["design"]["name"] == "smoke" and len(identity["cohort"]) == 64
    assert identity["backbone"]["sha256"] == hashlib.sha256(inputs[1].read_bytes()).hexdigest()

    _, rows = read_rows(records / "results.csv")
    args = run_args(inputs, tmp_path / "work2")
    del args[args.index("--backbone"): args.index("--backbone") + 2]
    again = simulate(*args, "--records", str(records))
    assert again.exit_code == 0, again.output
    assert read_rows(records / "results.csv")[1] == rows
    assert list((tmp_path / "work2" / "cache").glob("prepared_*.npz"))


def test_a_synthetic_study_makes_its_backbone_once_and_resumes_on_it_anywhere(tmp_path: Path, monkeypatch):
    """`--synthetic` pre-trains the backbone in the first session and keeps it (with its recipe) in the records; a
    session in a fresh run folder, as on another machine, only generates the cohort and resumes on the kept file."""
    import sim.synthetic
    from sim.profiles import PROFILES

    records = tmp_path / "records"
    args = ["--synthetic", "--profile", "smoke", "--records", str(records)]
    first = simulate(*args, "--out", str(tmp_path / "session1"), "--stop-after", "0")  # makes, keeps, trains nothing
    assert first.exit_code == 0, first.output + (first.stderr or "")
    assert "(0 of 8 runs)" in first.output
    made = tmp_path / "session1" / "backbone.pt"
    assert (records / "backbone.pt").read_bytes() == made.read_bytes()
    kept = json.loads((records / "run.json").read_text())["backbone"]
    recipe = kept["recipe"]
    assert (recipe["epochs"], recipe["upstream_cases"], recipe["upstream_seed"]) == (1, 4, 1)
    assert recipe["backbone"] == PROFILES["smoke"].recipe.backbone.to_dict()

    def no_pretraining(*args, **kwargs):
        raise AssertionError("the backbone was made again")

    monkeypatch.setattr(sim.synthetic, "_pretrain_synthetic", no_pretraining)
    monkeypatch.setattr(sim.synthetic, "prepare_synthetic", no_pretraining)
    second = simulate(*args, "--out", str(tmp_path / "session2"))
    assert second.exit_code == 0, second.output + (second.stderr or "")
    assert "(8 of 8 runs)" in second.output
    assert not (tmp_path / "session2" / "backbone.pt").exists()
    assert (tmp_path / "session2" / "cohort" / "dataset.json").is_file()
    assert json.loads((records / "run.json").read_text())["backbone"] == kept


def test_a_kept_backbone_that_differs_from_its_checksum_is_refused(inputs, tmp_path: Path):
    """The rows were measured on the kept file: a changed or missing one (weights or architecture) is refused before
    any work, and so is a --backbone with other bytes than the one the records keep."""
    records = tmp_path / "records"
    assert simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records)).exit_code == 0
    before = {p.name: p.read_bytes() for p in records.iterdir() if p.is_file()}
    weights = records / "backbone.pt"
    original = weights.read_bytes()

    other = other_backbone(tmp_path / "other.pt", seed=1)
    refused = simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records), "--backbone", str(other))
    assert refused.exit_code != 0 and "keeps another backbone" in refused.stderr

    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit
    tampered = simulate(*run_args(inputs, tmp_path / "fresh"), "--records", str(records))
    assert tampered.exit_code != 0
    assert "backbone.pt has SHA-256" in tampered.stderr and "restore it from version control" in tampered.stderr
    assert "Traceback" not in tampered.stderr and not (tmp_path / "fresh").exists()

    weights.write_bytes(original)
    (records / "backbone.json").write_text((records / "backbone.json").read_text() + " ")
    assert "backbone.json has SHA-256" in simulate(*run_args(inputs, tmp_path / "w"), "--records", str(records)).stderr
    (records / "backbone.json").write_bytes(before["backbone.json"])
    weights.unlink()
    missing = simulate(*run_args(inputs, tmp_path / "w"), "--records", str(records))
    assert missing.exit_code != 0 and "backbone.pt is missing" in missing.stderr
    weights.write_bytes(original)
    assert {p.name: p.read_bytes() for p in records.iterdir() if p.is_file()} == before


def test_a_backbone_over_the_size_limit_is_not_kept(inputs, tmp_path: Path, monkeypatch):
    import sim.kept_backbone

    monkeypatch.setattr(sim.kept_backbone, "MAX_BACKBONE_BYTES", 1000)
    result = simulate(*run_args(inputs, tmp_path / "out"))
    assert result.exit_code != 0
    assert "more than the 0.001 MB a study keeps in its records" in result.stderr
    assert not (tmp_path / "out" / "backbone.pt").exists() and not (tmp_path / "out" / "run.json").exists()


def test_records_of_the_earlier_simulator_are_not_resumed(inputs, tmp_path: Path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "run.json").write_text(json.dumps({"backbone": "1fc2a0122736" + "0" * 52}))
    result = simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records))
    assert result.exit_code != 0 and "earlier simulator" in result.stderr and "Traceback" not in result.stderr


def other_backbone(path: Path, seed: int) -> Path:
    """The tiny backbone's architecture with other weights."""
    torch.manual_seed(seed)
    config = BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    save_backbone(build_backbone(config), config, path)
    return path


def test_records_of_another_cohort_are_not_resumed(inputs, tmp_path: Path):
    records = tmp_path / "records"
    assert simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records)).exit_code == 0
    before = (records / "results.csv").read_bytes()
    other = generate_cohort(tmp_path / "other", cases=12, seed=4, size=16, progress=False).parent  # same names
    args = run_args(inputs, tmp_path / "work_other")
    args[args.index("--data") + 1] = str(other)
    result = simulate(*args, "--records", str(records))
    assert result.exit_code != 0
    assert "records another cohort" in result.stderr
    assert (records / "results.csv").read_bytes() == before


def test_records_of_another_design_or_split_are_not_resumed(inputs, tmp_path: Path):
    records = tmp_path / "records"
    assert simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records)).exit_code == 0
    before = {p.name: p.read_bytes() for p in records.iterdir() if p.is_file()}
    args = run_args(inputs, tmp_path / "work")
    args[args.index("--tuning") + 1] = "prompt"
    result = simulate(*args, "--records", str(records))
    assert result.exit_code != 0
    assert "records another design (differs in study)" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in records.iterdir() if p.is_file()} == before

    split = json.loads((records / "split.json").read_text())
    split["pool"][0], split["test"][0] = split["test"][0], split["pool"][0]
    (records / "split.json").write_text(json.dumps(split))
    result = simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records))
    assert result.exit_code != 0
    assert "holds a different pool/test split" in result.stderr and "Traceback" not in result.stderr
    assert (records / "results.csv").read_bytes() == before["results.csv"]


def test_stop_after_starts_no_model_past_the_deadline_and_the_rerun_finishes(inputs, finished_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    stopped = simulate(*run_args(inputs, out), "--stop-after", "0")
    assert stopped.exit_code == 0, stopped.output
    assert "the same command resumes the study" in stopped.stderr
    assert "(0 of 8 runs)" in stopped.output and "(no rows yet)" in stopped.output
    assert not (out / "results.csv").exists()
    finished = simulate(*run_args(inputs, out))
    assert finished.exit_code == 0, finished.output
    assert "resumes" not in finished.stderr
    assert len(read_rows(out / "results.csv")[1]) == 8  # (2 references + 2 strategies × 1 round) × 2 tunings
    assert "Partial" not in (out / "report.md").read_text()

    # Stopped and resumed, the study measures what an uninterrupted run measured: same picks, same Dice.
    def measured(folder: Path) -> dict:
        return {(r["seed"], r["strategy"], r["tuning"], r["round"]): (r["labeled"], r["tumour_dice"], r["liver_dice"])
                for r in read_rows(folder / "results.csv")[1]}
    assert measured(out) == measured(finished_run)


def test_a_partial_study_says_so_in_its_report(finished_run: Path):
    from sim.report import write_report

    report = write_report(finished_run, expected_runs=10).read_text()
    assert "**Partial: 8 of 10 runs are in.**" in report
    assert "Partial" not in write_report(finished_run, expected_runs=8).read_text()


def test_a_negative_stop_after_fails_clearly(inputs, tmp_path: Path):
    result = simulate(*run_args(inputs, tmp_path / "out"), "--stop-after", "-5")
    assert result.exit_code != 0
    assert "--stop-after is minutes from now and must be >= 0, got -5" in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the study's rounds and rows

def test_finetune_budget_only_trains_the_arm_in_the_budget_round_alone(inputs, tmp_path: Path):
    """The fine-tuning arm trains in the budget round only; the learning curve's strategy goes on past the budget
    with prompt tuning; the row count the run expects agrees with the rows it writes."""
    from cohort.msd import load_msd
    from sim.design import Study
    from sim.profiles import PROFILES
    from sim.report import write_report
    from sim.runner import run_simulation

    data, backbone = inputs
    study = Study(strategies=("random",), budget=0.3, rounds=2, seeds=1, tunings=("prompt", "finetune"),
                  curve_strategies=("random",), curve_budgets=(0.5,), finetune_budget_only=True)
    assert [study.trains("finetune", r) for r in range(3)] == [False, True, False]
    assert all(study.trains("prompt", r) for r in range(3))
    outcome = run_simulation(load_msd(data), backbone, tmp_path / "out", PROFILES["smoke"], study)
    assert outcome.complete and outcome.done == outcome.total == 8 and outcome.discarded == ()
    _, rows = read_rows(outcome.results)
    assert sorted((r["strategy"], r["tuning"], int(r["round"])) for r in rows) == sorted([
        ("full", "prompt", 0), ("full", "finetune", 0), ("full_matched", "prompt", 0), ("full_matched", "finetune", 0),
        ("random", "prompt", 0), ("random", "prompt", 1), ("random", "prompt", 2), ("random", "finetune", 1),
    ])
    report = write_report(tmp_path / "out").read_text()
    comparisons = report.split("Prompt tuning − fine-tuning, tumour Dice")[1].split("###")[0]
    assert "| random: prompt − finetune | both | 1 |" in comparisons
    assert "| random: prompt − finetune | both | 0 |" not in comparisons


def test_the_lesion_study_has_114_rows():
    """Two references per tuning (full data, compute-matched); per seed, TESLA and random on the learning curve (4
    prompt rounds, fine-tuning at the budget) and four strategies to the budget (2 prompt rounds, fine-tuning at the
    budget)."""
    from sim.design import seed_rows, study_of, study_rows
    from sim.profiles import PROFILES

    study = study_of(PROFILES["lesion"])
    assert seed_rows(study, 207) == 2 * 5 + 4 * 3
    assert study_rows(study, 207, references=4) == 114


def two_round_study(*strategies: str):
    from sim.design import Study

    return Study(strategies=strategies, budget=0.5, rounds=2, seeds=1, tunings=("prompt", "finetune"))


@pytest.mark.parametrize("models_before_deadline", [1, 3, 4])
def test_a_study_stopped_between_models_resumes_to_the_same_measurements(
    inputs, tmp_path: Path, monkeypatch, models_before_deadline: int
):
    """The deadline passes after a few models (prompt, fine-tuning, scoring of a two-round TESLA unit); the resumed
    run resumes from the round state (nothing discarded), picks the same volumes and measures the same Dice as a run
    that was never stopped."""
    import sim.rounds
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.runner import run_simulation

    data, backbone = inputs
    study = two_round_study("tesla")
    dataset = load_msd(data)
    whole = run_simulation(dataset, backbone, tmp_path / "whole", PROFILES["smoke"], study)

    checks = {"n": 0}

    def deadline_after_some_checks(ctx) -> bool:
        checks["n"] += 1
        return checks["n"] > models_before_deadline

    monkeypatch.setattr(sim.rounds, "past_deadline", deadline_after_some_checks)
    stopped = run_simulation(dataset, backbone, tmp_path / "split", PROFILES["smoke"], study)
    assert 0 < stopped.done < stopped.total
    monkeypatch.undo()
    resumed = run_simulation(dataset, backbone, tmp_path / "split", PROFILES["smoke"], study)
    assert resumed.complete and resumed.discarded == ()
    assert measured(resumed.results) == measured(whole.results)
    assert state_of(tmp_path / "split", "tesla") == state_of(tmp_path / "whole", "tesla")


def measured(results: Path) -> dict:
    return {(r["seed"], r["strategy"], r["tuning"], r["round"]): (r["labeled"], r["tumour_dice"], r["liver_dice"])
            for r in read_rows(results)[1]}


def state_of(records: Path, strategy: str, seed: int = 0) -> dict:
    return json.loads((records / "state" / f"seed{seed}_{strategy}.json").read_text())


def mark_rows(results: Path, strategy: str, value: str = "0.999") -> None:
    """Overwrite ``strategy``'s tumour Dice in ``results``: a row still marked afterwards was kept, not measured
    again."""
    columns, rows = read_rows(results)
    for row in rows:
        if row["strategy"] == strategy:
            row["tumour_dice"] = value
    with results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("damage", ["rows ahead of the state", "state missing", "state unreadable", "other picks"])
def test_a_seed_whose_round_state_does_not_match_its_rows_is_run_again_from_round_0(
    inputs, tmp_path: Path, damage: str
):
    """The unfinished-seed rule (sim.rounds.settle_unfinished): a seed × strategy whose round state is missing,
    unreadable or does not account for its rows loses its rows and state and runs again from round 0, ending with the
    rows of an uninterrupted run; the other strategies of the seed keep theirs as they were."""
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.runner import run_simulation

    data, backbone = inputs
    dataset = load_msd(data)
    study = two_round_study("tesla", "random")
    out = tmp_path / "out"
    whole = run_simulation(dataset, backbone, out, PROFILES["smoke"], study)
    expected, original = measured(whole.results), state_of(out, "tesla")
    state = out / "state" / "seed0_tesla.json"
    if damage == "rows ahead of the state":  # cut between round 1's rows and its state (round 0's state is there)
        kept = state_of(out, "tesla")
        kept["rounds"] = kept["rounds"][:1]
        state.write_text(json.dumps(kept))
    elif damage == "state missing":
        state.unlink()
    elif damage == "state unreadable":
        state.write_text(state.read_text()[:20])
    else:
        other = state_of(out, "tesla")
        other["rounds"][1]["selected"] = other["rounds"][1]["selected"][::-1]
        state.write_text(json.dumps(other))
    mark_rows(whole.results, "tesla")
    mark_rows(whole.results, "random", value="0.888")

    again = run_simulation(dataset, backbone, out, PROFILES["smoke"], study)
    assert again.complete and again.discarded == ((0, "tesla"),)
    rows = read_rows(again.results)[1]
    assert not [r for r in rows if r["tumour_dice"] == "0.999"]  # tesla's rows were measured again
    assert {r["tumour_dice"] for r in rows if r["strategy"] == "random"} == {"0.888"}  # random's were kept
    assert {key: value[0] for key, value in measured(again.results).items()} == {
        key: value[0] for key, value in expected.items()}
    assert {key: value for key, value in measured(again.results).items() if key[1] == "tesla"} == {
        key: value for key, value in expected.items() if key[1] == "tesla"}
    assert state_of(out, "tesla") == original
    per_case = read_rows(out / "per_case.csv")[1]
    keys = [(r["seed"], r["strategy"], r["tuning"], r["round"], r["case"]) for r in per_case]
    assert len(keys) == len(set(keys))  # the discarded rows' per-case rows went with them


def test_per_case_rows_without_their_results_row_are_dropped_before_a_run(inputs, tmp_path: Path):
    """A write cut between a row's per-case rows and the row itself: the orphans go, and the row is written again
    with its per-case rows once."""
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.runner import run_simulation

    data, backbone = inputs
    dataset = load_msd(data)
    study = two_round_study("random")
    out = tmp_path / "out"
    whole = run_simulation(dataset, backbone, out, PROFILES["smoke"], study)
    columns, rows = read_rows(whole.results)
    last = rows[-1]
    with whole.results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[:-1])
    again = run_simulation(dataset, backbone, out, PROFILES["smoke"], study)
    assert again.complete and read_rows(again.results)[1][-1] == last
    per_case = read_rows(out / "per_case.csv")[1]
    keys = [(r["seed"], r["strategy"], r["tuning"], r["round"], r["case"]) for r in per_case]
    assert len(keys) == len(set(keys))


def test_strategies_that_pick_the_same_volumes_share_one_trained_model(inputs, tmp_path: Path, monkeypatch):
    """Entropy's cold start is random's seeded draw, so both label the same volumes in round 0 and the run trains
    that model once (the second row carries the first's training time); what the store hands back measures and
    scores exactly what training again would (entropy alone, in a fresh run folder, gives the same rows)."""
    import sim.rounds
    from cohort.msd import load_msd
    from sim.design import Study
    from sim.profiles import PROFILES
    from sim.runner import run_simulation

    data, backbone = inputs
    dataset = load_msd(data)
    trainings = []
    train_network = sim.rounds.train_network

    def counted(*args, **kwargs):  # the real training, counted
        trainings.append(args[3])
        return train_network(*args, **kwargs)

    monkeypatch.setattr(sim.rounds, "train_network", counted)

    def study(*strategies: str) -> Study:
        return Study(strategies=strategies, budget=0.5, rounds=2, seeds=1, tunings=("prompt",))

    both = run_simulation(dataset, backbone, tmp_path / "both", PROFILES["smoke"], study("random", "entropy"))
    rows = {(r["strategy"], int(r["round"])): r for r in read_rows(both.results)[1]}
    random0, entropy0 = rows[("random", 0)], rows[("entropy", 0)]
    assert entropy0["labeled"] == random0["labeled"]
    assert entropy0["train_time_s"] == random0["train_time_s"]  # not trained again: a new training takes its own time
    assert entropy0["tumour_dice"] == random0["tumour_dice"] and entropy0["liver_dice"] == random0["liver_dice"]
    trained = {(r["tuning"], int(r["round"]), r["labeled"]) for r in rows.values()}
    assert len(trainings) == len(list((tmp_path / "both" / "models").glob("*.pt"))) == len(trained) < len(rows)

    alone = run_simulation(dataset, backbone, tmp_path / "alone", PROFILES["smoke"], study("entropy"))

    def by_round(path: Path, strategy: str) -> dict:
        return {r["round"]: (r["labeled"], r["tumour_dice"], r["liver_dice"])
                for r in read_rows(path)[1] if r["strategy"] == strategy}
    assert by_round(alone.results, "entropy") == by_round(both.results, "entropy")
    assert state_of(tmp_path / "alone", "entropy") == state_of(tmp_path / "both", "entropy")


def test_a_run_folder_s_stored_models_are_neither_trained_evaluated_nor_scored_again(inputs, tmp_path: Path, monkeypatch):
    """New records over the same run folder (a study re-run in a session that still has its models): every network,
    test evaluation and pool scoring comes from the store, and the rows are what the first run measured."""
    import sim.rounds
    from cohort.msd import load_msd
    from sim.design import Study
    from sim.profiles import PROFILES
    from sim.runner import run_simulation

    data, backbone = inputs
    dataset = load_msd(data)
    study = Study(strategies=("tesla", "entropy"), budget=0.5, rounds=2, seeds=1, tunings=("prompt",))
    first = run_simulation(dataset, backbone, tmp_path / "out", PROFILES["smoke"], study, records=tmp_path / "first")
    assert first.complete

    def refuse(*args, **kwargs):
        raise AssertionError("computed again")

    for name in ("train_network", "evaluate", "volume_scores"):
        monkeypatch.setattr(sim.rounds, name, refuse)
    second = run_simulation(dataset, backbone, tmp_path / "out", PROFILES["smoke"], study, records=tmp_path / "second")
    assert second.complete
    assert read_rows(second.results) == read_rows(first.results)
    for strategy in ("tesla", "entropy"):
        assert state_of(tmp_path / "second", strategy) == state_of(tmp_path / "first", strategy)


def test_a_report_of_the_references_alone_is_written(inputs, tmp_path: Path, monkeypatch):
    """A session that stops right after the full-data references (the first hours of a study) still gets a report."""
    import sim.rounds
    from cohort.msd import load_msd
    from sim.design import Study
    from sim.profiles import PROFILES
    from sim.report import write_report
    from sim.runner import run_simulation

    data, backbone = inputs
    study = Study(strategies=("tesla", "random"), budget=0.3, rounds=1, seeds=1, tunings=("prompt",))
    checks = {"n": 0}

    def after_one_model(ctx) -> bool:
        checks["n"] += 1
        return checks["n"] > 1

    monkeypatch.setattr(sim.rounds, "past_deadline", after_one_model)
    outcome = run_simulation(load_msd(data), backbone, tmp_path / "out", PROFILES["smoke"], study)
    assert outcome.done == 1
    report = write_report(tmp_path / "out", expected_runs=outcome.total).read_text()
    assert "**Partial: 1 of 4 runs are in.**" in report and "| prompt | full | 0 |" in report


def test_a_synthetic_run_makes_its_cohort_beside_the_pretraining(tmp_path: Path):
    """`--synthetic` makes the upstream cohort, pre-trains the backbone and (in a side process meanwhile) generates the
    downstream cohort: the same files as a direct generation with the profile's seed; a second call reuses both."""
    from sim.profiles import PROFILES
    from sim.synthetic import prepare_synthetic

    profile = PROFILES["smoke"]
    cohort, backbone = prepare_synthetic(tmp_path / "run", profile)
    assert backbone.is_file() and (tmp_path / "run" / "upstream" / "dataset.json").is_file()
    direct = generate_cohort(tmp_path / "direct", profile.cases, profile.cohort_seed, profile.size, progress=False)
    made = sorted(p.relative_to(cohort) for p in cohort.rglob("*.nii.gz"))
    assert len(made) == 2 * profile.cases
    assert made == sorted(p.relative_to(direct.parent) for p in direct.parent.rglob("*.nii.gz"))
    assert all((cohort / p).read_bytes() == (direct.parent / p).read_bytes() for p in made)
    weights = backbone.read_bytes()
    assert prepare_synthetic(tmp_path / "run", profile) == (cohort, backbone)
    assert backbone.read_bytes() == weights


def test_clasp_pe_keeps_both_class_entropies_for_its_next_round(inputs, tmp_path: Path):
    """A rule with two score keys: the simulator stores both class entropies of every unlabelled pool volume with
    the first round, in the rule's column order, and runs the second round on them."""
    out = tmp_path / "clasp"
    args = run_args(inputs, out)
    args[args.index("tesla,random")] = "clasp_pe"
    args[args.index("--rounds") + 1] = "2"
    args[args.index("--budget") + 1] = "0.5"
    args[args.index("--tuning") + 1] = "prompt"
    result = simulate(*args)
    assert result.exit_code == 0, result.output
    first, second = json.loads((out / "state" / "seed0_clasp_pe.json").read_text())["rounds"]
    assert first["scores"] and all(isinstance(v, list) and len(v) == 2 for v in first["scores"].values())
    pool = json.loads((out / "split.json").read_text())["pool"]  # names; scores are keyed by cohort index
    assert len(first["scores"]) == len(pool) - len(first["selected"])
    assert not set(first["scores"]) & {str(i) for i in first["selected"]}
    assert not set(second["selected"]) & set(first["selected"])
    _, rows = read_rows(out / "results.csv")
    assert sorted(int(r["round"]) for r in rows if r["strategy"] == "clasp_pe") == [0, 1]


def test_worker_processes_record_the_rows_one_process_does(finished_run: Path, inputs, tmp_path: Path):
    """`--workers 2` runs the units in fork-server processes (the start method that CUDA needs); every unit is seeded,
    so the rows equal the one-process run's, timings aside."""
    result = simulate(*run_args(inputs, tmp_path / "parallel"), "--workers", "2")
    assert result.exit_code == 0, result.output + (result.stderr or "")
    header, parallel = read_rows(tmp_path / "parallel" / "results.csv")
    _, serial = read_rows(finished_run / "results.csv")
    measured = [c for c in header if not c.endswith("_s") and "time" not in c]

    def keyed(rows):
        return sorted(tuple(row[c] for c in measured) for row in rows)

    assert len(parallel) == len(serial) > 0 and keyed(parallel) == keyed(serial)


def test_every_model_trains_the_steps_the_rule_gives_its_label_count(inputs, tmp_path: Path, monkeypatch):
    """Budget rounds, the full-data reference and the compute-matched reference (every pool label on the budget
    round's steps) all take their steps from the one rule, in both tunings."""
    import dataclasses

    import sim.rounds
    from cohort.msd import load_msd
    from sim.design import Study
    from sim.profiles import PROFILES, StepRule
    from sim.runner import run_simulation

    data, backbone = inputs
    trainings = []
    train_network = sim.rounds.train_network

    def recorded(*args, **kwargs):  # the real training, its label count and schedule recorded
        trainings.append((args[3], len(args[1]), args[4].steps))
        return train_network(*args, **kwargs)

    monkeypatch.setattr(sim.rounds, "train_network", recorded)
    rule = StepRule(base_labels=1, base_steps=1, power=1.0, min_steps=1, max_steps=50)
    profile = dataclasses.replace(PROFILES["smoke"], steps=rule)
    study = Study(strategies=("random",), budget=0.3, rounds=1, seeds=1, tunings=("prompt", "finetune"))
    outcome = run_simulation(load_msd(data), backbone, tmp_path / "out", profile, study)
    assert outcome.complete
    rows = {(r["strategy"], r["tuning"]): r for r in read_rows(outcome.results)[1]}
    pool, budget = int(rows[("full", "prompt")]["n_labeled"]), int(rows[("random", "prompt")]["n_labeled"])
    assert int(rows[("full_matched", "prompt")]["n_labeled"]) == pool > budget
    assert sorted(trainings) == sorted(
        (tuning, labels, steps) for tuning in ("prompt", "finetune")
        for labels, steps in ((pool, pool), (pool, budget), (budget, budget))
    )
