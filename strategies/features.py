"""Embedding preprocessing for distance-based rules: per-dimension standardisation and optional PCA.

Volume embeddings mix features of very different scales (per-channel means and standard deviations of
several encoder stages, intensity statistics in HU). Unscaled, Euclidean distances would be decided by
the few largest-scale dimensions, so TESLA and CoreSet standardise each dimension first (SPEC §2).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from strategies.base import SelectionError, check_int_option

# A dimension whose standard deviation is below this fraction of its magnitude is treated as constant:
# the mean of identical floats is not always bit-exact, which leaves ~1e-16 relative noise.
_CONSTANT_RTOL = 1e-10


def standardise(X: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit standard deviation per dimension, with statistics taken from ``ref``.

    X: (N, D); ref: (R, D), default X. Returns (N, D) float64. Dimensions that are constant in ``ref``
    carry no information about differences between volumes and are set to 0 (not divided by ~0).
    """
    X = _as_matrix(X, "X")
    ref = X if ref is None else _as_matrix(ref, "ref")
    if ref.shape[1] != X.shape[1]:
        raise SelectionError(f"ref has {ref.shape[1]} dimensions, X has {X.shape[1]}")
    if ref.shape[0] == 0:
        raise SelectionError("cannot standardise against an empty reference set")
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    constant = std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
    scaled = (X - mean) / np.where(constant, 1.0, std)
    scaled[:, constant] = 0.0
    return scaled


def reduce(X: np.ndarray, pca_dims: int, ref: np.ndarray | None = None) -> np.ndarray:
    """Project X onto the first ``pca_dims`` principal components of ``ref`` (default X).

    X: (N, D) -> (N, min(pca_dims, D, R)) with R = rows of ref. ``pca_dims == 0`` returns X unchanged
    (no reduction); with fewer than 2 reference rows there is no variance to fit, so X is returned
    unchanged as well. Uses scikit-learn's exact (full SVD) PCA, so the result is deterministic.
    """
    X = _as_matrix(X, "X")
    pca_dims = check_int_option("pca_dims", pca_dims, 0)
    ref = X if ref is None else _as_matrix(ref, "ref")
    if ref.shape[1] != X.shape[1]:
        raise SelectionError(f"ref has {ref.shape[1]} dimensions, X has {X.shape[1]}")
    if pca_dims == 0 or ref.shape[0] < 2:
        return X
    n_components = min(pca_dims, X.shape[1], ref.shape[0])
    pca = PCA(n_components=n_components, svd_solver="full").fit(ref)
    return pca.transform(X)


def prepare(
    X: np.ndarray, *, standardise_dims: bool, pca_dims: int, ref: np.ndarray | None = None
) -> np.ndarray:
    """Standardise (if asked) then PCA-reduce (if pca_dims > 0) X, both fitted on ``ref`` (default X).

    X: (N, D) -> (N, D') with D' = D or the PCA dimension.
    """
    if standardise_dims:
        scaled_ref = None if ref is None else standardise(ref, ref)
        X = standardise(X, ref)
        ref = scaled_ref
    return reduce(X, pca_dims, ref)


def _as_matrix(array: np.ndarray, what: str) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2:
        raise SelectionError(f"{what} must be a 2-D array (rows x dimensions), got shape {matrix.shape}")
    return matrix
