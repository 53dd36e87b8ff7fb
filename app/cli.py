"""The ``slpt`` command line: cohort generation, serving, and (later) training, benchmarks and admin tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

cli = typer.Typer(help="slpt-label: SLPT prompt tuning + TESLA selective labeling on MONAI Label.", no_args_is_help=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clear error (no stack trace) and return the exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@cli.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (must be empty or absent)")],
    cases: Annotated[int, typer.Option(help="Number of volumes")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files")] = 0,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels")] = 64,
    upstream: Annotated[bool, typer.Option(help="Make the organ-only pre-training cohort (no tumour class)")] = False,
) -> None:
    """Write a synthetic abdominal-CT cohort in MSD layout (imagesTr/, labelsTr/, dataset.json)."""
    from sim.synth import CohortError, generate_cohort

    try:
        dataset_json = generate_cohort(out, cases=cases, seed=seed, size=size, upstream=upstream)
    except CohortError as exc:
        raise fail(str(exc))
    typer.echo(f"wrote {cases} cases: {dataset_json}")


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    studies: Annotated[Path, typer.Option(help="Studies folder: volumes, or an MSD dataset (imagesTr/ is served)")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy database URL (default: SQLite in the studies folder)")] = None,
) -> None:
    """Start the MONAI Label server: a thin wrapper over `monailabel start_server`.

    Its other options pass through unchanged, e.g. `--conf KEY VALUE` (repeatable) for app options.
    """
    from app.server import start_server
    from app.studies import StudiesError, resolve_studies

    try:
        resolve_studies(studies)
    except StudiesError as exc:
        raise fail(str(exc))
    conf = [("db", db)] if db else []
    start_server(studies, host=host, port=port, conf=conf, extra_args=list(ctx.args))


@cli.command()
def demo(
    dir: Annotated[Path, typer.Option(help="Demo folder")] = Path("demo"),
    cases: Annotated[int, typer.Option(help="Volumes in the demo cohort")] = 60,
    size: Annotated[int, typer.Option(help="Edge length of the demo volumes")] = 64,
) -> None:
    """Make the embedded demo (synthetic cohort) if it is missing; leaves an existing demo untouched."""
    from sim.synth import generate_cohort

    studies = dir / "studies"
    if (studies / "dataset.json").is_file():
        typer.echo(f"demo cohort present: {studies}")
    else:
        generate_cohort(studies, cases=cases, seed=0, size=size)
        typer.echo(f"demo cohort written: {studies}")


def main() -> None:
    cli()
