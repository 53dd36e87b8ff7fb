"""The one place that composes every package's commands into ``slpt``, so that the product (``app``) never imports the
lab (``bench``, ``sim``) while ``slpt --help`` still lists everything."""

from __future__ import annotations

from app.cli import cli
from bench.cli import bench_cli
from sim.cli import sim_cli

cli.add_typer(bench_cli, name="bench")
cli.add_typer(sim_cli)  # no name: its commands (``simulate``, …) join the top level


def main() -> None:
    cli()
