"""Benchmarks run by ``slpt bench …``: our server against stock MONAI Label, measured side by side in one run.

See docs/design.md, "Benchmarks and quality bars".
"""

from __future__ import annotations


class BenchError(ValueError):
    """A benchmark cannot run as asked (bad arguments, or a server that failed or answered an error)."""
