"""ClaSP PE: class-stratified, scheduled power predictive entropy (Lüth, Traub et al., "Finally Outshining the Random
Baseline", TMLR, arXiv 2601.13677), the one query rule that beat improved random baselines across the nnActive
benchmark. The authors query 3D patches with nnU-Net; this is a volume-level reading of its three parts
(docs/design.md, "Baselines"):

- **Predictive entropy, per class.** Each volume carries the mean entropy of the mean prediction over the voxels it
  labels liver, and over those it labels tumour (``strategies.uncertainty.class_entropies``).
- **Class-stratified.** The round's picks are dealt to the classes in turn, the rarest (tumour) first; each class
  takes its best remaining volume by its own score, so the tumour is not averaged away by the liver. A class whose
  scores are all 0 (predicted nowhere) passes its turn.
- **Scheduled power noising.** Ranking by ``log s + τ·G`` with G standard Gumbel noise samples volumes with
  probability ∝ s^(1/τ) (power sampling, Kirsch et al.): diverse early picks instead of near-duplicates, greedy
  ones later. τ decays linearly from ``tau`` to 0 as the labeled share of the pool grows to ``decay_until``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from strategies.base import ColdStart, Pool, SelectionError, Strategy
from strategies.uncertainty import CLASS_ENTROPY_CLASSES

#: Smallest score taken into the logarithm: a score of 0 ranks below every positive one.
_FLOOR = 1e-12


class ClaSPEntropy(Strategy):
    """Class-stratified scheduled power predictive entropy; ``uncertainty`` is (N, S), one column per class score,
    rarest class first (``score``)."""

    name = "clasp_pe"
    score = tuple(f"class_entropy_{c}" for c in sorted(CLASS_ENTROPY_CLASSES, reverse=True))  # tumour, then liver
    cold_start = ColdStart.RANDOM
    description = (
        "ClaSP PE: class-stratified scheduled power predictive entropy (nnActive benchmark, 2026). Picks are dealt "
        "to tumour and liver in turn, each taking the volume the model is least certain about for that structure; "
        "noise on the ranking spreads early picks and fades as labels accumulate. Needs a trained model's scores."
    )

    def __init__(self, tau: float = 1.0, decay_until: float = 0.2) -> None:
        """tau: scale of the Gumbel noise on log scores before any label. decay_until: labeled share of the pool
        (labeled / (labeled + unlabeled)) at which the noise has decayed to 0."""
        if not np.isfinite(tau) or tau < 0:
            raise SelectionError(f"tau must be a finite number >= 0, got {tau!r}")
        if not 0 < decay_until <= 1:
            raise SelectionError(f"decay_until must lie in (0, 1], got {decay_until!r}")
        self.tau = float(tau)
        self.decay_until = float(decay_until)

    def config(self) -> dict[str, Any]:
        return {"tau": self.tau, "decay_until": self.decay_until}

    def temperature(self, n_labeled: int, n_pool: int) -> float:
        """τ for a pool of ``n_pool`` unlabeled volumes beside ``n_labeled`` labeled ones."""
        share = n_labeled / max(n_labeled + n_pool, 1)
        return self.tau * max(0.0, 1.0 - share / self.decay_until)

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> list[int]:
        assert pool.uncertainty is not None  # guaranteed by requires_uncertainty
        scores = pool.uncertainty.reshape(pool.uncertainty.shape[0], -1)  # (N, S)
        tau = self.temperature(pool.labeled.shape[0], scores.shape[0])
        noise = np.random.default_rng(seed).gumbel(size=scores.shape)
        keys = np.log(np.maximum(scores, _FLOOR)) + tau * noise
        active = [c for c in range(scores.shape[1]) if (scores[:, c] > 0).any()] or list(range(scores.shape[1]))
        # per active class, the pool best first (ties by index); each holds every volume, so every turn picks one
        ranked = [iter(np.lexsort((np.arange(len(k)), -k)).tolist()) for k in keys[:, active].T]
        picks: list[int] = []
        while len(picks) < n_picks:
            queue = ranked[len(picks) % len(ranked)]
            picks.append(next(i for i in queue if i not in picks))
        return picks
