"""Embedding standardisation and PCA reduction."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import SelectionError, reduce, standardise
from strategies.features import balance_blocks, prepare


def test_standardise_gives_zero_mean_unit_std_and_zeroes_constant_dims():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5, 30, 50), np.full(50, 1000.1), rng.uniform(size=50)])
    Z = standardise(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), [1, 0, 1], atol=1e-12)
    assert (Z[:, 1] == 0).all()


def test_standardise_uses_reference_statistics():
    ref = np.array([[0.0, 1.0], [2.0, 1.0]])
    np.testing.assert_allclose(standardise(np.array([[4.0, 7.0]]), ref), [[3.0, 0.0]])
    with pytest.raises(SelectionError, match="dimensions"):
        standardise(np.zeros((2, 3)), ref)


def test_reduce_keeps_the_leading_components():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(40, 2)) * [10, 3]
    X = latent @ rng.normal(size=(2, 6)) + rng.normal(scale=0.01, size=(40, 6))
    reduced = reduce(X, 2)
    assert reduced.shape == (40, 2)
    # Two components keep the pairwise geometry of essentially rank-2 data.
    d_full = np.linalg.norm(X[:, None] - X[None], axis=-1)
    d_reduced = np.linalg.norm(reduced[:, None] - reduced[None], axis=-1)
    np.testing.assert_allclose(d_reduced, d_full, atol=0.1)
    np.testing.assert_array_equal(reduce(X, 0), X)
    assert reduce(X, 50).shape == (40, 6)  # clipped to the available dimensions
    with pytest.raises(SelectionError, match="pca_dims"):
        reduce(X, -1)


def test_balance_blocks_gives_every_block_unit_total_variance():
    rng = np.random.default_rng(2)
    Z = standardise(np.column_stack([rng.normal(size=(30, 9)), rng.normal(size=(30, 1)), np.ones((30, 2))]))
    balanced = balance_blocks(Z, [9, 1, 2])
    np.testing.assert_allclose(balanced[:, :9].var(axis=0).sum(), 1.0)
    np.testing.assert_allclose(balanced[:, 9], Z[:, 9])
    assert (balanced[:, 10:] == 0).all()  # a constant block stays constant (and is not divided by 0)
    # Scales come from the reference set, so new rows land in the same space.
    np.testing.assert_allclose(balance_blocks(Z[:3] * 2, [9, 1, 2], ref=Z), balanced[:3] * 2)
    with pytest.raises(SelectionError, match="another layout"):
        balance_blocks(Z, [9, 1])
    with pytest.raises(SelectionError, match="block size"):
        balance_blocks(Z, [9, 0, 3])


def test_prepare_balances_after_standardising_and_before_pca():
    rng = np.random.default_rng(3)
    X = rng.normal(loc=5, scale=[1.0] * 4 + [30.0], size=(40, 5))
    expected = reduce(balance_blocks(standardise(X), [4, 1]), 2)
    np.testing.assert_allclose(prepare(X, standardise_dims=True, pca_dims=2, block_sizes=[4, 1]), expected)
