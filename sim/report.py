"""From the simulator's CSV files to statistics, ``learning_curves.png`` and ``report.md``.

Comparisons are paired (SPEC §7): two strategies at the same seed and round share the test set, and at the
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

from sim.simulate import FULL_DATA  # noqa: E402

BOOTSTRAP_SAMPLES = 2000
METRICS = ("tumour_dice", "tumour_dice_global", "liver_dice")


def load(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, per-case) tables of a run folder."""
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


def budget_ratios(results: pd.DataFrame) -> pd.DataFrame:
    """Per tuning × strategy: mean tumour Dice at the last round / mean full-data tumour Dice."""
    last = results[results["strategy"] != FULL_DATA]
    last = last[last["round"] == last["round"].max()]
    full = results[results["strategy"] == FULL_DATA].groupby("tuning")["tumour_dice"].mean()
    at_budget = last.groupby(["tuning", "strategy"]).agg(n_labeled=("n_labeled", "mean"), dice=("tumour_dice", "mean"))
    at_budget["full_data_dice"] = [full.get(t, math.nan) for t, _ in at_budget.index]
    at_budget["ratio"] = at_budget["dice"] / at_budget["full_data_dice"]
    return at_budget.reset_index()


def paired_comparison(
    per_case: pd.DataFrame, results: pd.DataFrame, a: dict, b: dict, seed: int = 0
) -> dict[str, float]:
    """Paired tumour-Dice difference a − b (a, b: column filters such as {"strategy": "tesla", "tuning": ...}).

    Returns {"n_seeds", "mean_diff", "ci_low", "ci_high", "t_p", "wilcoxon_p"}; the CI is the two-level
    bootstrap over seeds and test cases, the tests run over the per-seed differences of the test-set mean.
    """
    seed_a, seed_b = _select(results, a).set_index("seed")["tumour_dice"], _select(results, b).set_index("seed")["tumour_dice"]
    seeds = sorted(set(seed_a.index) & set(seed_b.index))
    out = {"n_seeds": len(seeds), "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "t_p": math.nan, "wilcoxon_p": math.nan}
    if not seeds:
        return out
    diffs = (seed_a[seeds] - seed_b[seeds]).to_numpy()
    out["mean_diff"] = float(diffs.mean())
    cases = _select(per_case, a), _select(per_case, b)
    matrix = _per_case_differences(*cases, seeds)  # (seeds, tumour test cases)
    if matrix.size:
        out["ci_low"], out["ci_high"] = _two_level_bootstrap(matrix, seed)
    if len(seeds) >= 2 and np.ptp(diffs) > 0:
        out["t_p"] = float(stats.ttest_rel(seed_a[seeds], seed_b[seeds]).pvalue)
    if len(seeds) >= 2 and np.any(diffs != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
    return out


def _select(table: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def _per_case_differences(cases_a: pd.DataFrame, cases_b: pd.DataFrame, seeds: list[int]) -> np.ndarray:
    """(seeds, cases) per-case tumour Dice a − b over the test cases with tumour."""
    def pivot(cases: pd.DataFrame) -> pd.DataFrame:
        tumour = cases[cases["has_tumour"] == 1]
        return tumour.pivot_table(index="seed", columns="case", values="tumour_dice")
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


def group_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean per-group tumour Dice (columns ``dice_<group>``) per tuning × strategy at the last round and full data."""
    columns = [c for c in results.columns if c.startswith("dice_")]
    last_round = results[results["strategy"] != FULL_DATA]["round"].max()
    rows = results[(results["strategy"] == FULL_DATA) | (results["round"] == last_round)]
    return rows.groupby(["tuning", "strategy"])[columns].mean().reset_index()


def plot_learning_curves(results: pd.DataFrame, path: Path) -> None:
    """Tumour Dice vs labeled volumes, mean ± std band per strategy, one panel per tuning, full-data lines."""
    tunings = sorted(results["tuning"].unique())
    fig, axes = plt.subplots(1, len(tunings), figsize=(6 * len(tunings), 4.5), squeeze=False, sharey=True)
    for ax, tuning in zip(axes[0], tunings):
        rows = results[results["tuning"] == tuning]
        for strategy, curve in rows[rows["strategy"] != FULL_DATA].groupby("strategy"):
            points = curve.groupby("round").agg(
                n=("n_labeled", "mean"), mean=("tumour_dice", "mean"), std=("tumour_dice", "std")
            ).fillna(0.0)
            ax.plot(points["n"], points["mean"], marker="o", label=strategy)
            ax.fill_between(points["n"], points["mean"] - points["std"], points["mean"] + points["std"], alpha=0.2)
        full = rows[rows["strategy"] == FULL_DATA]["tumour_dice"]
        if len(full):
            ax.axhline(full.mean(), color="black", linestyle="--", label=f"full data ({tuning})")
        ax.set_title(f"{tuning} tuning")
        ax.set_xlabel("labeled volumes")
        ax.set_ylabel("tumour Dice (mean over test cases with tumour)")
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


def write_report(out: Path, command: str = "") -> Path:
    """Write ``learning_curves.png`` and ``report.md`` from the CSV files in ``out``; returns report.md's path."""
    results, per_case = load(out)
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
    lines += [
        "Mean ± std over seeds; tumour Dice is the mean over test cases with tumour, global tumour Dice pools all",
        "test voxels, liver Dice covers liver + tumour. Full-data rows (`full`) train on 100 % of the pool.",
        "", "## Results", "", _markdown(shown), "", "![learning curves](learning_curves.png)", "",
        "## Dice at the budget / full-data Dice", "", _markdown(budget_ratios(results)), "",
    ]
    lines += _comparisons(results, per_case)
    groups = group_table(results)
    if len(groups.columns) > 2:
        lines += ["## Tumour Dice per acquisition group (last round and full data)", "", _markdown(groups), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _comparisons(results: pd.DataFrame, per_case: pd.DataFrame) -> list[str]:
    """Markdown sections: TESLA − random per tuning and round; prompt − finetune per strategy and round."""
    header = "| comparison | tuning | round | seeds | mean diff | 95 % CI (seeds × cases) | t-test p | Wilcoxon p |"
    rule = "|---|---|---|---|---|---|---|---|"
    strategies = set(results["strategy"])
    rounds = sorted(results[results["strategy"] != FULL_DATA]["round"].unique())
    lines: list[str] = []

    def row(label: str, tuning: str, rnd: int, a: dict, b: dict) -> str:
        c = paired_comparison(per_case, results, a, b)
        return (f"| {label} | {tuning} | {rnd} | {c['n_seeds']} | {_fmt(c['mean_diff'])} | "
                f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {_fmt(c['t_p'])} | {_fmt(c['wilcoxon_p'])} |")

    if {"tesla", "random"} <= strategies:
        lines += ["## TESLA − random (paired by seed, same test set)", "", header, rule]
        for tuning in sorted(results["tuning"].unique()):
            for rnd in rounds:
                lines.append(row("tesla − random", tuning, rnd, {"strategy": "tesla", "tuning": tuning, "round": rnd},
                                 {"strategy": "random", "tuning": tuning, "round": rnd}))
        lines.append("")
    if {"prompt", "finetune"} <= set(results["tuning"]):
        lines += ["## Prompt tuning − fine-tuning (same seed, same labels)", "", header, rule]
        for strategy in sorted(strategies):
            for rnd in ([0] if strategy == FULL_DATA else rounds):
                lines.append(row(f"{strategy}: prompt − finetune", "both", rnd,
                                 {"strategy": strategy, "tuning": "prompt", "round": rnd},
                                 {"strategy": strategy, "tuning": "finetune", "round": rnd}))
        lines.append("")
    return lines
