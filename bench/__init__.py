"""Benchmarks run by ``slpt bench …``: our server against stock MONAI Label, measured side by side in one run.

What every benchmark shares (the environment, the device, a clean process per measurement, the report's markdown)
is in :mod:`bench.harness`. See docs/design.md, "Benchmarks and quality bars".
"""

from __future__ import annotations


class BenchError(ValueError):
    """A benchmark cannot run as asked (bad arguments, or a server that failed or answered an error)."""
