"""MONAI Label strategy adapters: every "Next Sample" is a database claim (docs/design.md, "Next Sample: one database claim").

A strategy only decides the order in which volumes are offered; the claim itself (one transaction, a lease, skips
released) is :meth:`db.datastore.SQLDatastore.claim_next`, so two annotators never get the same volume.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

DEFAULT_ANNOTATOR = "user-xyz"  # what the Slicer plugin sends unless the annotator changes it


def annotator_of(request: dict[str, Any]) -> str:
    """The key a claim is held under; the REST layer sets ``annotator`` (client id + address, or the user)."""
    return str(request.get("annotator") or request.get("client_id") or DEFAULT_ANNOTATOR)


class ClaimStrategy(Strategy):
    """Offer unlabeled volumes in a fixed order (``first``: by id; ``random``: uniformly at random)."""

    def __init__(self, name: str, order: str, description: str):
        super().__init__(description)
        self.name = name
        self.order = order

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        return datastore.claim_next(annotator_of(request), self.name, order=self.order)


def claim_strategies() -> dict[str, Strategy]:
    return {
        "random": ClaimStrategy("random", "random", "Random unlabeled volume that nobody holds"),
        "first": ClaimStrategy("first", "first", "First unlabeled volume (by id) that nobody holds"),
    }
