"""Trained networks of a simulation run, kept by what determines them, so that no model is trained twice.

Training is deterministic given the run's identity (design, frozen backbone, prepared cohort), the tuning, the
schedule, the training seed and the labelled volumes in order. Strategies that pick the same volumes at the same seed
therefore train the very same network: random, entropy and fg_random all draw the seeded random permutation before
any model exists (entropy's cold start is random; fg_random's is random among volumes with liver, which on the
synthetic cohort is all of them). The store keeps, per model, its tensors and training time, its test-set evaluation
and the scores of the pool volumes it left unlabelled, so a second strategy reads them instead of training,
evaluating and scoring again (docs/design.md, "No model twice").

It lives in the run folder (``out/models``): what it holds can be made again, so it is never part of the records.
Every file is written atomically; two workers that train the same model at once both write the same content.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from models.backbone import BackboneConfig
from models.checkpoint import load_slpt, read_slpt_payload, save_slpt
from models.device import cpu_fast_layout
from models.slpt import SLPTNet
from storage.atomic import atomic_path, write_text_atomic

Evaluation = tuple[dict[str, float], list[dict]]  # (summary, per-case rows) as sim.evaluation.evaluate returns them


class RoundModels:
    """``root/<key>.pt`` (the network, :func:`models.checkpoint.save_slpt`, with its training seconds),
    ``root/<key>.eval.json`` (its test evaluation) and ``root/<key>.scores.json`` (every score of every pool
    volume it scored, by case index)."""

    def __init__(self, root: Path, run_identity: dict, backbone_config: BackboneConfig) -> None:
        """root: the folder; run_identity: what every model of the run depends on (``run.json``: design, kept
        backbone, cohort); backbone_config: the frozen backbone's architecture (a fine-tuned network is rebuilt from it)."""
        self.root = Path(root)
        self.run_digest = hashlib.sha256(json.dumps(run_identity, sort_keys=True).encode()).hexdigest()
        self.backbone_config = backbone_config

    def key(self, tuning: str, steps: int, lr: float, seed: int, labeled: Sequence[str]) -> str:
        """The name of one trained model: a digest of everything its weights depend on (``labeled``: case names, in
        the order training receives them, since the order changes which patches are drawn)."""
        spec = {"run": self.run_digest, "tuning": tuning, "steps": steps, "lr": lr, "seed": seed, "labeled": list(labeled)}
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]

    def load_network(self, key: str, backbone: nn.Module) -> tuple[SLPTNet, float] | None:
        """(network, its training seconds) around a copy of ``backbone``, or None if this model was never stored."""
        path = self.root / f"{key}.pt"
        if not path.is_file():
            return None
        payload = read_slpt_payload(path)
        network = cpu_fast_layout(load_slpt(path, copy.deepcopy(backbone), payload))  # the layout training left it in
        return network, float(payload["extra"]["train_seconds"])

    def save_network(self, key: str, network: SLPTNet, seconds: float) -> None:
        with atomic_path(self.root / f"{key}.pt") as partial:
            save_slpt(network, partial, self.backbone_config, extra={"train_seconds": seconds})

    def evaluation(self, key: str) -> Evaluation | None:
        found = self._read(key, "eval")
        return None if found is None else (found["summary"], found["per_case"])

    def save_evaluation(self, key: str, evaluation: Evaluation) -> None:
        summary, per_case = evaluation
        self._write(key, "eval", {"summary": summary, "per_case": per_case})

    def scores(self, key: str) -> dict[str, dict[str, float]] | None:
        """{pool case index (str): {score name: value}} of the volumes this model scored, or None."""
        return self._read(key, "scores")

    def save_scores(self, key: str, scores: dict[str, dict[str, float]]) -> None:
        self._write(key, "scores", scores)

    def _read(self, key: str, kind: str):
        path = self.root / f"{key}.{kind}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _write(self, key: str, kind: str, content) -> None:
        # json writes NaN (a test case without tumour) as NaN and reads it back; floats round-trip exactly.
        write_text_atomic(self.root / f"{key}.{kind}.json", json.dumps(content))
