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
    from sim.results import read_sessions

    resuming, finding_nothing = read_sessions(finished_run)[-2:]  # what each invocation found and left
    assert (int(resuming["rows_before"]), int(resuming["rows_after"])) == (len(rows) - 2, len(rows))
    assert (int(finding_nothing["rows_before"]), int(finding_nothing["rows_after"])) == (len(rows), len(rows))


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


# ---------------------------------------------------------------- a study that spans sessions (--records)

def test_records_live_apart_and_resume_from_a_fresh_run_folder(inputs, tmp_path: Path):
    """The records folder (what a long study keeps in git) is enough to resume: a new run folder re-makes the
    cache, and no row already recorded is trained again."""
    records = tmp_path / "records"
    first = simulate(*run_args(inputs, tmp_path / "work1"), "--records", str(records))
    assert first.exit_code == 0, first.output
    assert {p.name for p in records.iterdir()} >= {"results.csv", "per_case.csv", "split.json", "run.json", "report.md"}
    assert not (tmp_path / "work1" / "results.csv").exists()
    assert list((tmp_path / "work1" / "cache").glob("prepared_*.npz"))  # the re-makeable part stays in --out
    identity = json.loads((records / "run.json").read_text())
    assert identity["design"]["name"] == "smoke" and len(identity["backbone"]) == 64 and len(identity["cohort"]) == 64

    _, rows = read_rows(records / "results.csv")
    again = simulate(*run_args(inputs, tmp_path / "work2"), "--records", str(records))
    assert again.exit_code == 0, again.output
    assert read_rows(records / "results.csv")[1] == rows
    assert list((tmp_path / "work2" / "cache").glob("prepared_*.npz"))


def other_backbone(path: Path, seed: int) -> Path:
    """The tiny backbone's architecture with other weights (as a re-make with other float rounding would give)."""
    torch.manual_seed(seed)
    config = BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    save_backbone(build_backbone(config), config, path)
    return path


def first_session(monkeypatch, inputs, tmp_path: Path, rounds: int):
    """A two-seed ``random`` study run on the tiny backbone by a session that ends (its deadline passes) once two
    models have started. Returns (dataset, study, records folder, that run's outcome)."""
    import sim.simulate as simulate_module
    from cohort.msd import load_msd
    from sim.profiles import PROFILES

    data, backbone = inputs
    dataset = load_msd(data)
    study = simulate_module.Study(strategies=("random",), budget=0.3, rounds=rounds, seeds=2, tunings=("prompt",))
    records = tmp_path / "records"
    checks = {"n": 0}

    def after_two_models(ctx) -> bool:
        checks["n"] += 1
        return checks["n"] > 2

    monkeypatch.setattr(simulate_module, "past_deadline", after_two_models)
    try:
        first = simulate_module.run_simulation(dataset, backbone, tmp_path / "work", PROFILES["smoke"], study,
                                               records=records)
    finally:
        monkeypatch.undo()
    return dataset, study, records, first


def test_another_backbone_realization_records_apart_and_takes_only_the_seeds_nobody_has(
    inputs, tmp_path: Path, monkeypatch
):
    """A backbone re-made on another machine may differ in its last bits: its rows go to ``backbone-<fingerprint>/``
    with references of its own, it runs only the seeds no other realization has rows for, the first realization's
    records stay as they were, and the report covers both, each seed against its own realization's reference."""
    import sim.simulate as simulate_module
    from sim.profiles import PROFILES
    from sim.report import load, write_report

    # The first machine's session ends after its reference and seed 0.
    dataset, study, records, first = first_session(monkeypatch, inputs, tmp_path, rounds=1)
    assert (first.done, first.total) == (2, 3)
    before = {name: (records / name).read_bytes() for name in ("results.csv", "per_case.csv", "run.json")}
    first_backbone = json.loads((records / "run.json").read_text())["backbone"][:12]

    other = other_backbone(tmp_path / "other.pt", seed=1)
    second = simulate_module.run_simulation(dataset, other, tmp_path / "work2", PROFILES["smoke"], study, records=records)
    assert {name: (records / name).read_bytes() for name in before} == before
    [realization] = list(records.glob("backbone-*"))
    identity = json.loads((realization / "run.json").read_text())
    assert realization.name == "backbone-" + identity["backbone"][:12] != "backbone-" + first_backbone
    assert sorted((r["seed"], r["strategy"]) for r in read_rows(realization / "results.csv")[1]) == [
        ("0", "full"), ("1", "random")]
    assert (second.done, second.total) == (4, 4) and second.complete
    assert second.elsewhere == {0: first_backbone}

    # A third realization finds every seed taken: it records nothing, not even references.
    third = simulate_module.run_simulation(dataset, other_backbone(tmp_path / "third.pt", seed=2), tmp_path / "work3",
                                           PROFILES["smoke"], study, records=records)
    assert third.complete and third.elsewhere == {0: first_backbone, 1: identity["backbone"][:12]}
    assert len(list(records.glob("backbone-*"))) == 1

    results, _ = load(records)
    assert sorted(set(results["backbone"])) == sorted({first_backbone, identity["backbone"][:12]})
    assert sorted(results[results["strategy"] == "full"]["seed"]) == [0, 1000]  # each reference its own unit
    report = write_report(records, expected_runs=second.total).read_text()
    assert "Partial" not in report and "| prompt | random | 0 |" in report


def test_an_unfinished_seed_released_on_its_realization_is_run_from_its_first_round_on_another(
    inputs, tmp_path: Path, monkeypatch
):
    """A seed left unfinished on a realization that no machine at hand re-makes is released: its rows and state move
    to ``released/`` with the reason, the next run on another realization takes the seed from round 0 (beside the
    seeds nobody had), and the report reads the new rows and names the release. A finished seed, or one nobody holds,
    is refused and nothing moves."""
    import sim.simulate as simulate_module
    from slpt.main import cli
    from sim.profiles import PROFILES
    from sim.report import write_report

    # The first machine's session ends after its reference and seed 0's round 0.
    dataset, study, records, first = first_session(monkeypatch, inputs, tmp_path, rounds=2)
    assert (first.done, first.total) == (2, 5)
    assert (records / "state" / "seed0_random.json").is_file()

    def release(seed: int, reason: str = "its realization's CPU was not drawn again"):
        return CliRunner().invoke(cli, ["release-seed", "--records", str(records), "--seed", str(seed),
                                        "--reason", reason])

    for refused, message in ((release(1), "no realization"), (release(0, reason=" "), "say why")):
        assert refused.exit_code != 0 and message in refused.stderr and "Traceback" not in refused.stderr
    assert [r["strategy"] for r in read_rows(records / "results.csv")[1]] == ["full", "random"]

    released = release(0)
    assert released.exit_code == 0, released.output + (released.stderr or "")
    assert [r["strategy"] for r in read_rows(records / "results.csv")[1]] == ["full"]
    assert {r["seed"] for r in read_rows(records / "per_case.csv")[1] if r["strategy"] != "full"} == set()
    [folder] = list((records / "released").glob("seed0-*"))
    assert [(r["seed"], r["strategy"], r["round"]) for r in read_rows(folder / "results.csv")[1]] == [("0", "random", "0")]
    assert read_rows(folder / "per_case.csv")[1] and (folder / "state" / "seed0_random.json").is_file()
    assert not (records / "state" / "seed0_random.json").exists()
    note = json.loads((folder / "release.json").read_text())
    assert (note["seed"], note["rows"], note["rows_per_seed"]) == (0, 1, 2)

    second = simulate_module.run_simulation(dataset, other_backbone(tmp_path / "other.pt", seed=1), tmp_path / "work2",
                                            PROFILES["smoke"], study, records=records)
    [realization] = list(records.glob("backbone-*"))
    assert sorted((r["seed"], r["strategy"], r["round"]) for r in read_rows(realization / "results.csv")[1]) == [
        ("0", "full", "0"), ("0", "random", "0"), ("0", "random", "1"), ("1", "random", "0"), ("1", "random", "1")]
    assert second.complete and second.elsewhere == {}

    finished = release(1)
    assert finished.exit_code != 0 and "is finished" in finished.stderr
    assert len(read_rows(realization / "results.csv")[1]) == 5
    report = write_report(records, expected_runs=second.total).read_text()
    assert "Partial" not in report and "Seed 0 was released on backbone" in report
    assert "its realization's CPU was not drawn again" in report


def test_a_cpu_that_can_add_nothing_stops_before_making_the_backbone(inputs, tmp_path: Path, monkeypatch):
    """Once every seed is held, only the CPU kinds that made a realization with rows left can add rows. The records'
    ``sessions.csv`` says which they are (by family and model), and `slpt simulate --synthetic` on any other CPU stops
    before pre-training: exit 0, the reason on stderr, nothing made and nothing written. ``--force`` makes the
    backbone anyway."""
    import sim.results
    import sim.simulate as simulate_module
    from sim.preflight import check_machine
    from sim.profiles import PROFILES
    from sim.results import append_session

    epyc, xeon = "AMD EPYC (family 25 model 17)", "Intel(R) Xeon(R) Processor (family 6 model 207)"
    # Realization A's session ends with seed 0 at 1 of its 2 rows; seed 1 is free, so any CPU can add rows.
    dataset, study, records, first = first_session(monkeypatch, inputs, tmp_path, rounds=2)
    backbone_a = json.loads((records / "run.json").read_text())["backbone"][:12]
    assert check_machine(records, xeon).can_add
    # Realization B takes seed 1 whole: every seed is held now, and only A has rows left.
    simulate_module.run_simulation(dataset, other_backbone(tmp_path / "other.pt", seed=1), tmp_path / "work2",
                                   PROFILES["smoke"], study, records=records)
    [folder_b] = list(records.glob("backbone-*"))
    assert check_machine(records, xeon).can_add  # nothing says who makes A: this CPU kind might
    for cpu, backbone in ((epyc, backbone_a), (xeon, folder_b.name.removeprefix("backbone-"))):
        append_session(records, {"started_utc": "2026-12-06 00:00", "cpu": cpu, "backbone": backbone,
                                 "prepare_min": 1.0, "run_min": 1.0, "rows_before": 0, "rows_after": 2})

    plan = check_machine(records, xeon)
    assert not plan.can_add
    assert [(r.backbone, r.rows, r.expected, r.unfinished_seeds, r.made_on) for r in plan.open_realizations] == [
        (backbone_a, 2, 3, (0,), (epyc,))]
    assert check_machine(records, epyc).can_add
    assert check_machine(records, "AMD EPYC 9454 (family 25 model 17)").can_add  # the same kind, named otherwise
    assert not check_machine(records, "AMD EPYC (family 25 model 1)").can_add

    # A session on a CPU kind that made neither realization.
    monkeypatch.setattr(sim.results, "cpu_kind", lambda: "Intel(R) Xeon(R) Processor (family 6 model 167)")
    before = {p: p.read_bytes() for p in records.rglob("*") if p.is_file()}
    out = tmp_path / "synthetic"
    stopped = simulate("--synthetic", "--profile", "smoke", "--out", str(out), "--records", str(records))
    assert stopped.exit_code == 0, stopped.output
    assert "nothing this CPU can add" in stopped.stderr and f"backbone {backbone_a}" in stopped.stderr
    assert epyc in stopped.stderr and "family 6 model 167" in stopped.stderr and "--force" in stopped.stderr
    assert not out.exists()
    assert {p: p.read_bytes() for p in records.rglob("*") if p.is_file()} == before

    forced = simulate("--synthetic", "--profile", "smoke", "--out", str(out), "--records", str(records), "--force")
    assert (out / "backbone.pt").is_file()  # it went on; the smoke design then differs from the records' design
    assert forced.exit_code != 0 and "another design" in forced.stderr


def test_another_backbone_with_another_design_is_refused(inputs, tmp_path: Path):
    records = tmp_path / "records"
    assert simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records)).exit_code == 0
    args = run_args(inputs, tmp_path / "work_other")
    args[args.index("--backbone") + 1] = str(other_backbone(tmp_path / "other.pt", seed=1))
    args[args.index("--tuning") + 1] = "prompt"
    result = simulate(*args, "--records", str(records))
    assert result.exit_code != 0
    assert "records another design (differs in study)" in result.stderr and "Traceback" not in result.stderr
    assert not list(records.glob("backbone-*"))


def test_records_of_another_design_are_not_resumed(inputs, tmp_path: Path):
    records = tmp_path / "records"
    assert simulate(*run_args(inputs, tmp_path / "work"), "--records", str(records)).exit_code == 0
    before = (records / "results.csv").read_bytes()
    args = run_args(inputs, tmp_path / "work")
    args[args.index("--tuning") + 1] = "prompt"
    result = simulate(*args, "--records", str(records))
    assert result.exit_code != 0
    assert "records another design (differs in study)" in result.stderr
    assert (records / "results.csv").read_bytes() == before


def test_stop_after_starts_no_model_past_the_deadline_and_the_rerun_finishes(inputs, finished_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    stopped = simulate(*run_args(inputs, out), "--stop-after", "0")
    assert stopped.exit_code == 0, stopped.output
    assert "the same command resumes the study" in stopped.stderr
    assert "(0 of 6 runs)" in stopped.output and "(no rows yet)" in stopped.output
    assert not (out / "results.csv").exists()
    finished = simulate(*run_args(inputs, out))
    assert finished.exit_code == 0, finished.output
    assert "resumes" not in finished.stderr
    assert len(read_rows(out / "results.csv")[1]) == 6  # 2 references + 2 strategies × 1 round, × 2 tunings
    assert "Partial" not in (out / "report.md").read_text()

    # Stopped and resumed, the study measures what an uninterrupted run measured: same picks, same Dice.
    def measured(folder: Path) -> dict:
        return {(r["seed"], r["strategy"], r["tuning"], r["round"]): (r["labeled"], r["tumour_dice"], r["liver_dice"])
                for r in read_rows(folder / "results.csv")[1]}
    assert measured(out) == measured(finished_run)


def test_a_partial_study_says_so_in_its_report(finished_run: Path):
    from sim.report import write_report

    report = write_report(finished_run, expected_runs=10).read_text()
    assert "**Partial: 6 of 10 runs are in.**" in report
    assert "Partial" not in write_report(finished_run, expected_runs=6).read_text()


def test_every_run_logs_its_cost_and_the_report_sums_it(finished_run: Path):
    """`sessions.csv` gets one row per invocation (CPU, backbone, minutes, rows before and after); the report's cost
    section lists them. A second invocation that finds nothing to do adds a row with nothing gained."""
    from sim.results import read_sessions
    from sim.report import write_report

    first, *later = read_sessions(finished_run)
    _, rows = read_rows(finished_run / "results.csv")
    assert (int(first["rows_before"]), int(first["rows_after"])) == (0, len(rows))
    assert all(int(row["rows_after"]) == len(rows) for row in later)  # resumed runs (the test below)
    assert len(first["backbone"]) == 12 and first["cpu"]
    assert float(first["run_min"]) >= 0 and float(first["prepare_min"]) >= 0
    report = write_report(finished_run).read_text()
    cost = report.split("## Cost: wall time of each run on these records")[1]
    assert first["backbone"] in cost and "min of study runs" in cost
    by_cpu = cost.split("By CPU kind")[1]
    sessions = [first, *later]
    run_minutes = sum(float(row["run_min"]) for row in sessions)
    added = sum(int(row["rows_after"]) - int(row["rows_before"]) for row in sessions)
    assert f"| {first['cpu']} | {len(sessions)} | " in by_cpu
    assert f"| {run_minutes:.1f} | {added} | " in by_cpu


def test_a_negative_stop_after_fails_clearly(inputs, tmp_path: Path):
    result = simulate(*run_args(inputs, tmp_path / "out"), "--stop-after", "-5")
    assert result.exit_code != 0
    assert "--stop-after is minutes from now and must be >= 0, got -5" in result.stderr
    assert not (tmp_path / "out").exists()


def test_finetune_budget_only_trains_the_arm_in_the_budget_round_alone(inputs, tmp_path: Path):
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.simulate import Study, run_simulation

    data, backbone = inputs
    study = Study(strategies=("random",), budget=0.3, rounds=2, seeds=1, tunings=("prompt", "finetune"),
                  curve_strategies=("random",), curve_budgets=(0.5,), finetune_budget_only=True)
    assert [study.trains("random", "finetune", r, 0) for r in range(3)] == [False, True, False]
    assert all(study.trains("random", "prompt", r, 0) for r in range(3))
    outcome = run_simulation(load_msd(data), backbone, tmp_path / "out", PROFILES["smoke"], study)
    assert outcome.complete and outcome.done == outcome.total == 6
    _, rows = read_rows(outcome.results)
    assert sorted((r["strategy"], r["tuning"], int(r["round"])) for r in rows) == sorted([
        ("full", "prompt", 0), ("full", "finetune", 0),
        ("random", "prompt", 0), ("random", "prompt", 1), ("random", "prompt", 2), ("random", "finetune", 1),
    ])
    from sim.report import write_report

    report = write_report(tmp_path / "out").read_text()
    comparisons = report.split("Prompt tuning − fine-tuning, tumour Dice")[1].split("###")[0]
    assert "| random: prompt − finetune | both | 1 |" in comparisons
    assert "| random: prompt − finetune | both | 0 |" not in comparisons


def test_fine_tuning_on_named_strategies_and_the_curve_on_the_first_seeds(inputs, tmp_path: Path):
    """``finetune_strategies`` limits the fine-tuning arm to those strategies' labels, ``curve_seeds`` the learning
    curve to the first seeds; the row count the run expects agrees with the rows it writes."""
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.simulate import Study, run_simulation

    data, backbone = inputs
    study = Study(strategies=("tesla", "random"), budget=0.3, rounds=1, seeds=2, tunings=("prompt", "finetune"),
                  curve_strategies=("random",), curve_budgets=(0.5,), curve_seeds=1, finetune_budget_only=True,
                  finetune_strategies=("random",))
    assert not study.trains("tesla", "finetune", 0, 0) and study.trains("random", "finetune", 0, 0)
    assert study.follows_curve("random", 0) and not study.follows_curve("random", 1)
    assert not study.follows_curve("tesla", 0)
    outcome = run_simulation(load_msd(data), backbone, tmp_path / "out", PROFILES["smoke"], study)
    assert outcome.complete and outcome.done == outcome.total == 9
    _, rows = read_rows(outcome.results)
    assert sorted((int(r["seed"]), r["strategy"], r["tuning"], int(r["round"])) for r in rows) == sorted([
        (0, "full", "prompt", 0), (0, "full", "finetune", 0),
        (0, "tesla", "prompt", 0), (0, "random", "prompt", 0), (0, "random", "prompt", 1), (0, "random", "finetune", 0),
        (1, "tesla", "prompt", 0), (1, "random", "prompt", 0), (1, "random", "finetune", 0),
    ])


def test_strategies_recorded_from_the_budget_round_still_pick_every_round(inputs, tmp_path: Path):
    """``budget_round_only`` strategies record no row before the budget round: core-set (which picks by embeddings)
    trains nothing there, entropy trains the model its next pick ranks by but records no row for it; both still pick
    volumes in every round, and the row count the run expects agrees with the rows it writes."""
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.results import read_state
    from sim.simulate import Study, run_simulation

    data, backbone = inputs
    study = Study(strategies=("tesla", "entropy", "coreset"), budget=0.3, rounds=2, seeds=1, tunings=("prompt",),
                  budget_round_only=("entropy", "coreset"))
    assert study.trains("tesla", "prompt", 0, 0) and not study.trains("coreset", "prompt", 0, 0)
    assert study.trains("coreset", "prompt", 1, 0) and not study.trains("entropy", "prompt", 0, 0)
    out = tmp_path / "out"
    outcome = run_simulation(load_msd(data), backbone, out, PROFILES["smoke"], study)
    assert outcome.complete and outcome.done == outcome.total == 5
    _, rows = read_rows(outcome.results)
    assert sorted((r["strategy"], int(r["round"])) for r in rows if r["strategy"] != "full") == [
        ("coreset", 1), ("entropy", 1), ("tesla", 0), ("tesla", 1)]
    for strategy in ("entropy", "coreset"):
        state = read_state(out / "state" / f"seed0_{strategy}.json")
        assert [len(r["selected"]) for r in state] == [1, 1]
    assert read_state(out / "state" / "seed0_entropy.json")[0]["scores"]  # the unrecorded model scored the pool
    assert read_state(out / "state" / "seed0_coreset.json")[0]["scores"] is None
    # The reference, tesla's two rounds, entropy's two (its first unrecorded) and core-set's budget round.
    assert len(list((out / "models").glob("*.pt"))) == 1 + 2 + 2 + 1


def test_rounds_before_the_budget_are_recorded_on_the_curve_seeds_only(inputs, tmp_path: Path):
    """With ``early_rounds_on_curve_seeds`` a seed off the learning curve records only its budget round, while its
    first round still picks (and TESLA's first model still scores the pool for the second pick); the curve's seed
    records every round."""
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.results import read_state
    from sim.simulate import Study, run_simulation

    data, backbone = inputs
    study = Study(strategies=("tesla", "random"), budget=0.3, rounds=2, seeds=2, tunings=("prompt",),
                  curve_strategies=("random",), curve_budgets=(0.5,), curve_seeds=1, early_rounds_on_curve_seeds=True)
    assert study.trains("tesla", "prompt", 0, 0) and not study.trains("tesla", "prompt", 0, 1)
    out = tmp_path / "out"
    outcome = run_simulation(load_msd(data), backbone, out, PROFILES["smoke"], study)
    assert outcome.complete and outcome.done == outcome.total == 1 + 5 + 2
    _, rows = read_rows(outcome.results)
    assert sorted((int(r["seed"]), r["strategy"], int(r["round"])) for r in rows if r["strategy"] != "full") == [
        (0, "random", 0), (0, "random", 1), (0, "random", 2), (0, "tesla", 0), (0, "tesla", 1),
        (1, "random", 1), (1, "tesla", 1)]
    tesla = read_state(out / "state" / "seed1_tesla.json")
    assert [len(r["selected"]) for r in tesla] == [1, 1] and tesla[0]["scores"]


def test_later_design_fields_at_their_default_keep_the_recorded_full_design():
    """Fields added to the design after the `full` study's records were made (cosine rates, fine-tuning on named
    strategies, the curve on some seeds, rows from the budget round on) leave its recorded design unchanged at their
    defaults, and a profile that sets them records them; `annealed`'s recorded design stays its profile's too."""
    from sim.profiles import PROFILES
    from sim.simulate import LATER_FIELDS, design_identity, study_of

    records = Path(__file__).resolve().parents[2] / "docs" / "results" / "simulation" / "full" / "run.json"
    recorded = json.loads(records.read_text())["design"]
    assert design_identity(PROFILES["full"], study_of(PROFILES["full"])) == recorded
    annealed = design_identity(PROFILES["annealed"], study_of(PROFILES["annealed"]))
    assert annealed["lr_decay"] == "cosine"
    assert annealed["study"]["finetune_strategies"] == ["tesla"] and annealed["study"]["curve_seeds"] == 2
    assert {k for k in annealed if annealed[k] != recorded.get(k)} == {
        "name", "lr_decay", "finetune_strategies", "curve_seeds", "prompt", "study"}
    assert set(LATER_FIELDS) & set(recorded) == set()
    annealed_records = records.parents[1] / "annealed" / "run.json"
    assert annealed == json.loads(annealed_records.read_text())["design"]


def test_the_lean_profile_records_its_cuts_and_trains_fewer_rows_than_annealed():
    """``lean`` is ``annealed`` with the curve on one seed, rows before the budget round on that seed only, core-set
    from the budget round on and 240-step budget rounds: 14 rows on the curve's seed, 6 on each other seed."""
    from sim.profiles import PROFILES
    from sim.simulate import design_identity, seed_rows, study_of, study_rows

    lean, annealed = study_of(PROFILES["lean"]), study_of(PROFILES["annealed"])
    design = design_identity(PROFILES["lean"], lean)
    assert design["study"]["early_rounds_on_curve_seeds"] is True and design["study"]["budget_round_only"] == ["coreset"]
    assert design["prompt"] == {"steps": 240, "lr": 0.02} and design["reference_prompt"]["steps"] == 1600
    pool = 207
    assert [seed_rows(lean, pool, seed) for seed in range(5)] == [14, 6, 6, 6, 6]
    assert [seed_rows(annealed, pool, seed) for seed in range(5)] == [15, 15, 11, 11, 11]
    assert study_rows(lean, pool, references=2, realizations=1) == 40


@pytest.mark.parametrize("models_before_deadline", [1, 3, 4])
def test_a_study_stopped_between_models_resumes_to_the_same_measurements(
    inputs, tmp_path: Path, monkeypatch, models_before_deadline: int
):
    """The deadline passes after a few models (prompt, fine-tuning, scoring of a two-round TESLA unit); the resumed
    run picks the same volumes and measures the same Dice as a run that was never stopped."""
    import sim.simulate as simulate_module
    from cohort.msd import load_msd
    from sim.profiles import PROFILES

    data, backbone = inputs
    study = simulate_module.Study(strategies=("tesla",), budget=0.5, rounds=2, seeds=1, tunings=("prompt", "finetune"))
    dataset = load_msd(data)
    whole = simulate_module.run_simulation(dataset, backbone, tmp_path / "whole", PROFILES["smoke"], study)

    checks = {"n": 0}

    def deadline_after_some_models(ctx) -> bool:
        checks["n"] += 1
        return checks["n"] > models_before_deadline

    monkeypatch.setattr(simulate_module, "past_deadline", deadline_after_some_models)
    stopped = simulate_module.run_simulation(dataset, backbone, tmp_path / "split", PROFILES["smoke"], study)
    assert 0 < stopped.done < stopped.total
    monkeypatch.undo()
    resumed = simulate_module.run_simulation(dataset, backbone, tmp_path / "split", PROFILES["smoke"], study)
    assert resumed.complete

    def measured(path: Path) -> dict:
        return {(r["strategy"], r["tuning"], r["round"]): (r["labeled"], r["tumour_dice"], r["liver_dice"])
                for r in read_rows(path)[1]}
    assert measured(resumed.results) == measured(whole.results)
    assert json.loads((tmp_path / "split" / "state" / "seed0_tesla.json").read_text()) == json.loads(
        (tmp_path / "whole" / "state" / "seed0_tesla.json").read_text())


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


def test_strategies_that_pick_the_same_volumes_share_one_trained_model(inputs, tmp_path: Path, monkeypatch):
    """Entropy's cold start is random's seeded draw, so both label the same volumes in round 0 and the run trains
    that model once (the second row carries the first's training time); what the store hands back measures and
    scores exactly what training again would (entropy alone, in a fresh run folder, gives the same rows)."""
    import sim.simulate as simulate_module
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.simulate import Study, run_simulation

    data, backbone = inputs
    dataset = load_msd(data)
    trainings = []
    train_network = simulate_module.train_network

    def counted(*args, **kwargs):  # the real training, counted
        trainings.append(args[3])
        return train_network(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "train_network", counted)

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

    def measured(path: Path, strategy: str) -> dict:
        return {r["round"]: (r["labeled"], r["tumour_dice"], r["liver_dice"])
                for r in read_rows(path)[1] if r["strategy"] == strategy}
    assert measured(alone.results, "entropy") == measured(both.results, "entropy")
    assert json.loads((tmp_path / "alone" / "state" / "seed0_entropy.json").read_text()) == json.loads(
        (tmp_path / "both" / "state" / "seed0_entropy.json").read_text())


def test_a_run_folder_s_stored_models_are_neither_trained_evaluated_nor_scored_again(inputs, tmp_path: Path, monkeypatch):
    """New records over the same run folder (a study re-run in a session that still has its models): every network,
    test evaluation and pool scoring comes from the store, and the rows are what the first run measured."""
    import sim.simulate as simulate_module
    from cohort.msd import load_msd
    from sim.profiles import PROFILES

    data, backbone = inputs
    dataset = load_msd(data)
    study = simulate_module.Study(strategies=("tesla", "entropy"), budget=0.5, rounds=2, seeds=1, tunings=("prompt",))
    first = simulate_module.run_simulation(dataset, backbone, tmp_path / "out", PROFILES["smoke"], study,
                                           records=tmp_path / "first")
    assert first.complete

    def refuse(*args, **kwargs):
        raise AssertionError("computed again")

    for name in ("train_network", "evaluate", "volume_scores"):
        monkeypatch.setattr(simulate_module, name, refuse)
    second = simulate_module.run_simulation(dataset, backbone, tmp_path / "out", PROFILES["smoke"], study,
                                            records=tmp_path / "second")
    assert second.complete
    assert read_rows(second.results) == read_rows(first.results)
    for state in ("seed0_tesla.json", "seed0_entropy.json"):
        assert (tmp_path / "second" / "state" / state).read_text() == (tmp_path / "first" / "state" / state).read_text()


def test_a_report_of_the_references_alone_is_written(inputs, tmp_path: Path, monkeypatch):
    """A session that stops right after the full-data references (the first hours of a study) still gets a report."""
    import sim.simulate as simulate_module
    from cohort.msd import load_msd
    from sim.profiles import PROFILES
    from sim.report import write_report

    data, backbone = inputs
    study = simulate_module.Study(strategies=("tesla", "random"), budget=0.3, rounds=1, seeds=1, tunings=("prompt",))
    checks = {"n": 0}

    def after_one_model(ctx) -> bool:
        checks["n"] += 1
        return checks["n"] > 1

    monkeypatch.setattr(simulate_module, "past_deadline", after_one_model)
    outcome = simulate_module.run_simulation(load_msd(data), backbone, tmp_path / "out", PROFILES["smoke"], study)
    assert outcome.done == 1
    report = write_report(tmp_path / "out", expected_runs=outcome.total).read_text()
    assert "**Partial: 1 of 3 runs are in.**" in report and "| prompt | full | 0 |" in report


def test_a_synthetic_run_makes_its_cohort_beside_the_pretraining(tmp_path: Path):
    """`--synthetic` makes the upstream cohort, pre-trains the backbone and (in a side process meanwhile) generates the
    downstream cohort: the same files as a direct generation with the profile's seed; a second call reuses both."""
    from sim.profiles import PROFILES
    from sim.simulate import prepare_synthetic

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
