"""From the simulator's CSV files to statistics, ``learning_curves.png`` and ``report.md``.

Comparisons are paired (docs/design.md, "Measuring label efficiency honestly"): two strategies at the same seed
and round share the test set, and at the
same seed, strategy and round prompt tuning and fine-tuning share the labels. Uncertainty is reported as a
bootstrap 95 % confidence interval over seeds *and* test cases (two-level resampling: seeds with
replacement, then test cases with replacement; the statistic is the mean per-case paired difference),
plus a paired t-test and a Wilcoxon signed-rank test over the per-seed differences.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from sim.design import COMPUTE_MATCHED, FULL_DATA, REFERENCES  # noqa: E402
from sim.results import read_run, recorded_design  # noqa: E402

BOOTSTRAP_SAMPLES = 2000
METRICS = ("tumour_dice", "tumour_dice_global", "liver_dice")


def load(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, per-case) tables of a records folder."""
    return pd.read_csv(out / "results.csv"), pd.read_csv(out / "per_case.csv")


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per tuning × strategy × round: columns ``<metric>_mean``, ``<metric>_std``."""
    grouped = results.groupby(["tuning", "strategy", "round"])
    table = grouped[list(METRICS) + ["train_time_s"]].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n_labeled"] = grouped["n_labeled"].mean()
    table["seeds"] = grouped["seed"].nunique()
    table["tunable_params"] = grouped["tunable_params"].first()
    return table.reset_index()


def budget_round(results: pd.DataFrame, fixed: int | None = None) -> int:
    """The study budget's round: ``fixed`` when given (:func:`design_budget_round`, since a partial study may miss
    rounds), else as the data show it: the last round every strategy has (learning-curve strategies go on past it);
    0 while only the references are in."""
    if fixed is not None:
        return fixed
    rounds = results[~results["strategy"].isin(REFERENCES)].groupby("strategy")["round"].max()
    return int(rounds.min()) if len(rounds) else 0


def design_budget_round(out: Path) -> int | None:
    """The budget round the design in ``out/run.json`` fixes (its last budget round: ``rounds`` − 1), or None where no
    design is recorded."""
    rounds = ((recorded_design(out) or {}).get("study") or {}).get("rounds")
    return None if rounds is None else int(rounds) - 1


def budget_ratios(results: pd.DataFrame, metric: str = "tumour_dice", budget: int | None = None) -> pd.DataFrame:
    """Per tuning × strategy: mean ``metric`` at the budget round (``budget``; from the data when None) / mean
    full-data ``metric``."""
    last = results[~results["strategy"].isin(REFERENCES)]
    last = last[last["round"] == budget_round(results, budget)]
    full = results[results["strategy"] == FULL_DATA].groupby("tuning")[metric].mean()
    at_budget = last.groupby(["tuning", "strategy"]).agg(n_labeled=("n_labeled", "mean"), dice=(metric, "mean"))
    at_budget["full_data_dice"] = [full.get(tuning, math.nan) for tuning, _strategy in at_budget.index]
    at_budget["ratio"] = at_budget["dice"] / at_budget["full_data_dice"]
    return at_budget.reset_index()


def paired_comparison(
    per_case: pd.DataFrame, results: pd.DataFrame, a: dict, b: dict, seed: int = 0, metric: str = "tumour_dice"
) -> dict[str, float]:
    """Paired Dice difference a − b (a, b: column filters such as {"strategy": "tesla", "tuning": ...}).

    ``metric`` is "tumour_dice" (over the test cases with tumour) or "liver_dice" (over all test cases).
    Returns {"n_seeds", "mean_diff", "ci_low", "ci_high", "t_p", "wilcoxon_p"}; the CI is the two-level
    bootstrap over seeds and test cases, the tests run over the per-seed differences of the test-set mean.
    """
    seed_a, seed_b = _select(results, a).set_index("seed")[metric], _select(results, b).set_index("seed")[metric]
    seeds = sorted(set(seed_a.index) & set(seed_b.index))
    out = {"n_seeds": len(seeds), "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "t_p": math.nan, "wilcoxon_p": math.nan}
    if not seeds:
        return out
    diffs = (seed_a[seeds] - seed_b[seeds]).to_numpy()
    out["mean_diff"] = float(diffs.mean())
    cases = _select(per_case, a), _select(per_case, b)
    matrix = _per_case_differences(*cases, seeds, metric)  # (seeds, test cases)
    if matrix.size:
        out["ci_low"], out["ci_high"] = _two_level_bootstrap(matrix, seed)
    if len(seeds) >= 2 and np.ptp(diffs) > 1e-9:  # a t-test of (nearly) constant differences is undefined
        out["t_p"] = float(stats.ttest_rel(seed_a[seeds], seed_b[seeds]).pvalue)
    if len(seeds) >= 2 and np.any(diffs != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
    return out


def _select(table: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def _per_case_differences(
    cases_a: pd.DataFrame, cases_b: pd.DataFrame, seeds: list[int], metric: str = "tumour_dice"
) -> np.ndarray:
    """(seeds, cases) per-case Dice a − b: tumour Dice over the test cases with tumour, liver Dice over all."""
    def pivot(cases: pd.DataFrame) -> pd.DataFrame:
        counted = cases[cases["has_tumour"] == 1] if metric == "tumour_dice" else cases
        return counted.pivot_table(index="seed", columns="case", values=metric)
    a, b = pivot(cases_a), pivot(cases_b)
    columns = sorted(set(a.columns) & set(b.columns))
    return (a.loc[seeds, columns] - b.loc[seeds, columns]).to_numpy(dtype=float)


def _two_level_bootstrap(matrix: np.ndarray, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``matrix`` (seeds, cases), resampling seeds then cases."""
    rng = np.random.default_rng(seed)
    n_seeds, n_cases = matrix.shape
    rows = rng.integers(n_seeds, size=(BOOTSTRAP_SAMPLES, n_seeds))
    cols = rng.integers(n_cases, size=(BOOTSTRAP_SAMPLES, n_cases))
    means = np.array([matrix[r][:, c].mean() for r, c in zip(rows, cols)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def group_table(results: pd.DataFrame, budget: int | None = None) -> pd.DataFrame:
    """Mean per-group tumour Dice (columns ``dice_<group>``) per tuning × strategy at the budget round (``budget``; from
    the data when None) and full data."""
    columns = [c for c in results.columns if c.startswith("dice_")]
    last_round = budget_round(results, budget)
    rows = results[results["strategy"].isin(REFERENCES) | (results["round"] == last_round)]
    return rows.groupby(["tuning", "strategy"])[columns].mean().reset_index()


#: Metrics of the plot and the paired comparisons, with their names in the report.
METRIC_NAMES = {"tumour_dice": "tumour Dice", "liver_dice": "liver Dice"}
_AVERAGED_OVER = {"tumour_dice": "test cases with tumour", "liver_dice": "test cases"}


def plot_learning_curves(results: pd.DataFrame, path: Path) -> None:
    """Dice vs labeled volumes, mean ± std band per strategy, full-data lines: one column per tuning, one row
    per metric of :data:`METRIC_NAMES`. The panels of a row share their axes (a tuning trained at one label count
    alone is then read against the other's curve) and each keeps its own tick labels."""
    tunings = sorted(results["tuning"].unique())
    fig, axes = plt.subplots(
        len(METRIC_NAMES), len(tunings), figsize=(6 * len(tunings), 4.5 * len(METRIC_NAMES)), squeeze=False,
        sharex=True, sharey="row",
    )
    for row_axes, (metric, name) in zip(axes, METRIC_NAMES.items()):
        for ax, tuning in zip(row_axes, tunings):
            rows = results[results["tuning"] == tuning]
            for strategy, curve in rows[~rows["strategy"].isin(REFERENCES)].groupby("strategy"):
                points = curve.groupby("round").agg(
                    n=("n_labeled", "mean"), mean=(metric, "mean"), std=(metric, "std")
                ).fillna(0.0)
                ax.plot(points["n"], points["mean"], marker="o", label=strategy)
                ax.fill_between(points["n"], points["mean"] - points["std"], points["mean"] + points["std"], alpha=0.2)
            for reference, style, label in ((FULL_DATA, "--", "full data"), (COMPUTE_MATCHED, ":", "full data, budget steps")):
                full = rows[rows["strategy"] == reference][metric]
                if len(full):
                    ax.axhline(full.mean(), color="black", linestyle=style, label=f"{label} ({tuning})")
            ax.set_title(f"{tuning} tuning")
            ax.tick_params(labelleft=True, labelbottom=True)
            ax.margins(y=0.08)
            ax.set_xlabel("labeled volumes")
            ax.set_ylabel(f"{name} (mean over {_AVERAGED_OVER[metric]})")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_report(out: Path, command: str = "", expected_runs: int | None = None) -> Path:
    """Write ``learning_curves.png`` and ``report.md`` from the CSV files in ``out``; returns report.md's path.

    With fewer result rows than ``expected_runs`` (a study still under way) the report says it is partial."""
    results, per_case = load(out)
    budget = design_budget_round(out)
    plot_learning_curves(results, out / "learning_curves.png")
    summary = summary_table(results)
    shown = pd.DataFrame({
        "tuning": summary["tuning"], "strategy": summary["strategy"], "round": summary["round"],
        "labeled": summary["n_labeled"].round().astype(int), "seeds": summary["seeds"],
        "tumour Dice": [f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(summary["tumour_dice_mean"], summary["tumour_dice_std"])],
        "global tumour Dice": [f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(summary["tumour_dice_global_mean"], summary["tumour_dice_global_std"])],
        "liver Dice": [f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(summary["liver_dice_mean"], summary["liver_dice_std"])],
        "train s": summary["train_time_s_mean"].round(1), "tunable params": summary["tunable_params"],
    })
    lines = ["# Label-efficiency study (`slpt simulate`)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if expected_runs is not None and len(results) < expected_runs:
        lines += [f"**Partial: {len(results)} of {expected_runs} runs are in.** Every table and verdict below covers "
                  "only those; the same command resumes the study.", ""]
    kept = read_run(out).get("backbone")
    if isinstance(kept, dict):
        made = "pre-trained by the profile's recipe" if kept.get("recipe") else "given with --backbone"
        lines += [f"Backbone: `{kept['file']}` in these records (SHA-256 {kept['sha256'][:12]}…, {made}).", ""]
    lines += [
        "Mean ± std over seeds; tumour Dice is the mean over test cases with tumour, global tumour Dice pools all",
        "test voxels, liver Dice covers liver + tumour. Full-data rows (`full`) train on 100 % of the pool with the",
        "steps the one rule gives the whole pool; `full_matched` rows train on 100 % of the pool with the budget",
        "round's steps (compute-matched), so that what labels add and what compute adds read apart.",
        "", "## Results", "", _markdown(shown), "", "![learning curves](learning_curves.png)", "",
        "## Dice at the budget / full-data Dice", "", _markdown(budget_ratios(results, budget=budget)), "",
    ]
    lines += _targets(results, per_case, budget)
    lines += ["## Paired comparisons, tumour Dice", ""]
    lines += _comparisons(results, per_case, "tumour_dice")
    groups = group_table(results, budget)
    if len(groups.columns) > 2:
        lines += ["## Tumour Dice per acquisition group (budget round and full data)", "", _markdown(groups), ""]
    lines += ["## Liver Dice (secondary metric)", "", "Dice at the budget / full-data liver Dice:", "",
              _markdown(budget_ratios(results, "liver_dice", budget)), ""]
    lines += _comparisons(results, per_case, "liver_dice")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


TARGET_RATIO = 0.95  # TESLA + prompt tuning at the budget / full-data prompt tuning (issue target; paper: 0.94)
TARGET_TUNABLE_FRACTION = 0.06
# Below this full-data tumour Dice the task was not learned: ratios and differences then compare noise.
LEARNED_TUMOUR_DICE = 0.1
#: Below this full-data prompt-tuning tumour Dice the study says little (issue floor; nnU-Net on MSD Task03: ~0.64).
FLOOR_TUMOUR_DICE = 0.5
#: A paired verdict on fewer seeds has an interval over test cases only: it cannot show one strategy is better.
MIN_SEEDS_FOR_A_VERDICT = 2


def _baselines(results: pd.DataFrame) -> list[str]:
    """The strategies TESLA is compared with, in a fixed order."""
    return sorted(set(results["strategy"]) - {"tesla", *REFERENCES})


def _targets(results: pd.DataFrame, per_case: pd.DataFrame, budget: int | None = None) -> list[str]:
    """The study's targets on tumour Dice at the budget round (``budget``; from the data when None), each marked met or
    missed with its figure."""
    if "tesla" not in set(results["strategy"]) or "prompt" not in set(results["tuning"]):
        return []
    last = budget_round(results, budget)
    tesla_prompt = {"strategy": "tesla", "tuning": "prompt", "round": last}

    def mark(met: bool) -> str:
        return "met" if met else "**missed**"

    lines = ["## Targets (tumour Dice at the budget round)", ""]
    ratios = budget_ratios(results, budget=last).set_index(["tuning", "strategy"])
    full_prompt = float(_select(results, {"strategy": FULL_DATA, "tuning": "prompt"})["tumour_dice"].mean())
    learned = full_prompt >= LEARNED_TUMOUR_DICE
    lines.append(f"- Floor: full-data prompt tuning tumour Dice ≥ {FLOOR_TUMOUR_DICE}: "
                 f"{mark(full_prompt >= FLOOR_TUMOUR_DICE)} ({_fmt(full_prompt)})")
    if not learned:
        lines += [f"Full-data prompt tuning reached tumour Dice {_fmt(full_prompt)} (< {LEARNED_TUMOUR_DICE}): the "
                  "models did not learn tumours, so every verdict below compares noise and none counts as met.", ""]
    elif full_prompt < FLOOR_TUMOUR_DICE:
        lines += [f"Every verdict below is read with the floor missed: the full-data model reaches tumour Dice "
                  f"{_fmt(full_prompt)}, so the strategies are compared on weak tumour models, and a verdict met "
                  "here (or missed) need not hold for models at the floor.", ""]
    matched = _select(results, {"strategy": COMPUTE_MATCHED, "tuning": "prompt"})["tumour_dice"]
    if len(matched) and ("prompt", "tesla") in ratios.index:
        lines.append(f"- Labels and compute apart (not a target): every label on the budget's steps gives "
                     f"{_fmt(float(matched.mean()))}, the budget's labels (TESLA) "
                     f"{_fmt(float(ratios.loc[('prompt', 'tesla'), 'dice']))}, every label on the full schedule "
                     f"{_fmt(full_prompt)}")
    if ("prompt", "tesla") in ratios.index:
        ratio = float(ratios.loc[("prompt", "tesla"), "ratio"])
        lines.append(f"- TESLA + prompt tuning ≥ {TARGET_RATIO:.0%} of full-data prompt tuning: "
                     f"{mark(learned and ratio >= TARGET_RATIO)} ({_fmt(ratio, 2)})")
    if "finetune" in set(results["tuning"]):
        c = paired_comparison(per_case, results, tesla_prompt, {**tesla_prompt, "tuning": "finetune"})
        prompt_rows = _select(results, tesla_prompt)
        fraction = float((prompt_rows["tunable_params"] / prompt_rows["total_params"]).max())
        met = (learned and c["mean_diff"] >= 0 and fraction <= TARGET_TUNABLE_FRACTION
               and c["n_seeds"] >= MIN_SEEDS_FOR_A_VERDICT)
        lines.append(
            "- prompt tuning ≥ fine-tuning (TESLA): not measured yet (no seed has both at the budget round)"
            if not c["n_seeds"] else
            f"- prompt tuning ≥ fine-tuning at the same labels (TESLA) with ≤ {TARGET_TUNABLE_FRACTION:.0%} "
            f"tuned: {mark(met)} (difference {_fmt(c['mean_diff'])}, 95 % CI [{_fmt(c['ci_low'])}, "
            f"{_fmt(c['ci_high'])}]; {fraction:.2%} of the parameters tuned; {_seeds(c)}){_spans_zero(c) if met else ''}")
    for baseline in _baselines(results):
        c = paired_comparison(per_case, results, tesla_prompt, {**tesla_prompt, "strategy": baseline})
        if not c["n_seeds"]:
            lines.append(f"- TESLA > {baseline}: not measured yet (no seed has both at the budget round)")
            continue
        shown = learned and c["ci_low"] > 0 and c["n_seeds"] >= MIN_SEEDS_FOR_A_VERDICT
        lines.append(f"- TESLA > {baseline} (prompt tuning; 95 % CI of the paired difference above 0): "
                     f"{mark(shown)} (difference {_fmt(c['mean_diff'])}, CI [{_fmt(c['ci_low'])}, "
                     f"{_fmt(c['ci_high'])}]; {_seeds(c)})")
    return [*lines, ""]


def _seeds(comparison: dict) -> str:
    """How many seeds a paired verdict rests on; below :data:`MIN_SEEDS_FOR_A_VERDICT` it says why it is not met."""
    n = comparison["n_seeds"]
    if n < MIN_SEEDS_FOR_A_VERDICT:
        return f"{n} seed: its interval covers test cases only, not training noise, so it cannot meet a target"
    return f"{n} seeds"


def _spans_zero(comparison: dict) -> str:
    """What a "≥" verdict met on its mean difference does not show, when its interval includes 0."""
    if comparison["mean_diff"] >= 0 and comparison["ci_low"] <= 0:
        return "; met on the mean difference only: the interval includes 0, so neither is shown to be better"
    return ""


def _comparisons(results: pd.DataFrame, per_case: pd.DataFrame, metric: str = "tumour_dice") -> list[str]:
    """Markdown sections on ``metric``: TESLA − each baseline per tuning and round; prompt − finetune per strategy
    and round."""
    header = "| comparison | tuning | round | seeds | mean diff | 95 % CI (seeds × cases) | t-test p | Wilcoxon p |"
    rule = "|---|---|---|---|---|---|---|---|"
    name = METRIC_NAMES[metric]
    strategies = set(results["strategy"])
    lines: list[str] = []

    def rounds_of(*names: str, tunings: tuple[str, ...] = ()) -> list[int]:
        """Rounds that every strategy of ``names`` has (curve strategies have more), in each of ``tunings``
        (fine-tuning may train in the budget round only)."""
        have = [set(results[results["strategy"] == n]["round"]) for n in names]
        have += [set(results[(results["strategy"] == n) & (results["tuning"] == t)]["round"])
                 for n in names for t in tunings]
        return sorted(set.intersection(*have)) if have else []

    def row(label: str, tuning: str, rnd: int, a: dict, b: dict) -> str:
        c = paired_comparison(per_case, results, a, b, metric=metric)
        return (f"| {label} | {tuning} | {rnd} | {c['n_seeds']} | {_fmt(c['mean_diff'])} | "
                f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {_fmt(c['t_p'])} | {_fmt(c['wilcoxon_p'])} |")

    if "tesla" in strategies and _baselines(results):
        lines += [f"### TESLA − baselines, {name} (paired by seed, same test set)", "", header, rule]
        for baseline in _baselines(results):
            for tuning in sorted(results["tuning"].unique()):
                for rnd in rounds_of("tesla", baseline, tunings=(tuning,)):
                    lines.append(row(f"tesla − {baseline}", tuning, rnd,
                                     {"strategy": "tesla", "tuning": tuning, "round": rnd},
                                     {"strategy": baseline, "tuning": tuning, "round": rnd}))
        lines.append("")
    if {"prompt", "finetune"} <= set(results["tuning"]):
        lines += [f"### Prompt tuning − fine-tuning, {name} (same seed, same labels)", "", header, rule]
        for strategy in sorted(strategies):
            for rnd in ([0] if strategy in REFERENCES else rounds_of(strategy, tunings=("prompt", "finetune"))):
                lines.append(row(f"{strategy}: prompt − finetune", "both", rnd,
                                 {"strategy": strategy, "tuning": "prompt", "round": rnd},
                                 {"strategy": strategy, "tuning": "finetune", "round": rnd}))
        lines.append("")
    return lines
