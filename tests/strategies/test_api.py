"""The shared Strategy contract, the registry, and the no-torch rule, checked for every strategy."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import strategies
from strategies import STRATEGIES, SelectionError, Strategy, UnknownStrategyError, get_strategy

NAMES = ["tesla", "random", "first", "entropy", "epistemic", "coreset", "fg_random", "clasp_pe"]
POOL = np.random.default_rng(0).normal(size=(12, 4))
SCORES = np.random.default_rng(1).uniform(size=12)


def scores_for(name: str, n: int) -> np.ndarray:
    """(n,) scores, or (n, S) for a rule that ranks by S scores (each column a shifted copy)."""
    keys = STRATEGIES[name].score_keys()
    return SCORES[:n] if len(keys) <= 1 else np.column_stack([np.roll(SCORES, k)[:n] for k in range(len(keys))])


def run(name: str, embeddings=POOL, budget=3, **kwargs) -> list[int]:
    kwargs.setdefault("uncertainty", scores_for(name, len(embeddings)))
    return get_strategy(name).select(embeddings, budget, **kwargs)


def test_registry_holds_exactly_the_specified_names_tesla_first():
    assert list(STRATEGIES) == NAMES  # Slicer preselects the first strategy


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_describes_itself(name):
    strategy = get_strategy(name)
    assert isinstance(strategy, Strategy)
    assert strategy.name == name
    assert len(strategy.description) > 80
    assert set(strategy.config()) == set(type(strategy).option_names())
    assert type(strategy)(**strategy.config()).config() == strategy.config()
    assert strategy.info() == {"description": strategy.description, "config": strategy.config()}


@pytest.mark.parametrize("name", NAMES)
def test_returns_budget_distinct_python_ints(name):
    picks = run(name, labeled_embeddings=POOL[:2] + 0.5)
    assert len(picks) == 3 and len(set(picks)) == 3
    assert all(type(i) is int and 0 <= i < len(POOL) for i in picks)


@pytest.mark.parametrize("name", NAMES)
def test_budget_larger_than_pool_is_clipped(name):
    picks = run(name, budget=50)
    assert sorted(picks) == list(range(len(POOL)))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name):
    assert run(name, budget=5, seed=4) == run(name, budget=5, seed=4)


@pytest.mark.parametrize("name", NAMES)
def test_empty_pool_gives_no_picks(name):
    assert run(name, embeddings=np.empty((0, 4)), uncertainty=scores_for(name, 0)) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [0, -2, 2.5, True, "3"])
def test_bad_budget_is_rejected(name, budget):
    with pytest.raises(SelectionError, match="budget"):
        run(name, budget=budget)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_shapes_are_rejected_with_a_clear_message(name):
    expected = r"\(12,\)" if len(STRATEGIES[name].score_keys()) <= 1 else r"\(12, 2\)"
    with pytest.raises(SelectionError, match=r"uncertainty has shape \(11,\), expected " + expected):
        run(name, uncertainty=SCORES[:11])
    with pytest.raises(SelectionError, match="labeled_embeddings have 3 features per volume, the pool"):
        run(name, labeled_embeddings=np.zeros((2, 3)))
    with pytest.raises(SelectionError, match="embeddings must be a 2-D array"):
        run(name, embeddings=POOL[0])
    with pytest.raises(SelectionError, match="NaN"):
        run(name, embeddings=np.where(POOL > 1.5, np.nan, POOL))


def test_unknown_strategy_lists_the_known_names():
    with pytest.raises(UnknownStrategyError) as error:
        get_strategy("badge")
    assert isinstance(error.value, SelectionError)
    for name in NAMES:
        assert name in str(error.value)


def test_get_strategy_passes_options_and_rejects_unknown_ones():
    assert get_strategy("tesla", pca_dims=3).config()["pca_dims"] == 3
    with pytest.raises(SelectionError, match="no option pca_dim; its options: cluster_method"):
        get_strategy("tesla", pca_dim=3)
    with pytest.raises(SelectionError, match="its options: none"):
        get_strategy("random", seed=3)


def test_no_torch_anywhere_in_strategies():
    source_dir = pathlib.Path(strategies.__file__).parent
    for path in source_dir.glob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
    # Importing the package (and scikit-learn with it) must not pull torch in either.
    code = "import sys, strategies; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=source_dir.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "importing strategies imported torch"
