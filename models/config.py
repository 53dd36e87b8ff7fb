"""Frozen configuration dataclasses to and from plain dicts (JSON files, ``weights_only`` checkpoints).

One definition for every config of :mod:`models`: tuples become lists on the way out (JSON has no tuples), unknown
keys are refused on the way in (a checkpoint from another version fails loudly, not silently).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from models.errors import ModelError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as a dict of JSON-able values (tuples as lists, nested configs as dicts)."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if isinstance(value, tuple) else value

    return plain(asdict(config))


def config_from_dict(cls: type[C], data: dict[str, Any], what: str) -> C:
    """Inverse of :func:`config_to_dict`; ``what`` names the config in the error for unknown keys."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ModelError(f"unknown {what} config keys: {sorted(unknown)}")
    return cls(**data)
