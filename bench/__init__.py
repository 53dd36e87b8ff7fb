"""Benchmarks run by ``slpt bench …``: our server against stock MONAI Label, measured side by side in one run.

See docs/design.md, "Benchmarks and quality bars".
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")


class BenchError(ValueError):
    """A benchmark cannot run as asked (bad arguments, or a server that failed or answered an error)."""


def in_new_process(pool: ProcessPoolExecutor, function: Callable[..., T], argument: object, what: str, hint: str) -> T:
    """``function(argument)`` in a process of ``pool`` (each measurement starts from a clean process); a process
    that dies (e.g. killed for memory) becomes a :class:`BenchError` naming ``what`` it was doing and ``hint``."""
    try:
        return pool.submit(function, argument).result()
    except BrokenProcessPool as exc:
        raise BenchError(f"the process {what} died (killed for memory? {hint})") from exc
