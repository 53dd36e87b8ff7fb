"""The product's commands: cohort generation, serving, pre-training, the demo, the database and accounts.

The lab's commands (``slpt bench …``, ``slpt simulate``) belong to ``bench/cli.py`` and ``sim/cli.py``; the ``slpt``
entry point (``slpt/main.py``) composes the three, so the product never imports the lab (docs/design.md,
"Architecture")."""

from __future__ import annotations

import json
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
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels (160: about 2.5 mm voxels)")] = 160,
    upstream: Annotated[bool, typer.Option(help="Make the organ-only pre-training cohort (no tumour class)")] = False,
) -> None:
    """Write a synthetic abdominal-CT cohort in MSD layout (imagesTr/, labelsTr/, dataset.json)."""
    from cohort.synth import CohortError, generate_cohort

    try:
        dataset_json = generate_cohort(out, cases=cases, seed=seed, size=size, upstream=upstream)
    except CohortError as exc:
        raise fail(str(exc))
    typer.echo(f"wrote {cases} cases: {dataset_json}")


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    studies: Annotated[Path, typer.Option(envvar="SLPT_STUDIES", help="Studies folder: volumes, or an MSD dataset (imagesTr/ is served)")],
    host: Annotated[str, typer.Option(envvar="SLPT_HOST", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SLPT_PORT", help="Port to listen on")] = 8000,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy database URL (default: SQLite in the studies folder)")] = None,
    auth: Annotated[bool, typer.Option(help="Require a login (database users; also SLPT_AUTH=1)")] = False,
    insecure: Annotated[bool, typer.Option(envvar="SLPT_INSECURE", help="Allow auth off on a non-loopback address")] = False,
    no_model: Annotated[bool, typer.Option(
        "--no-model", envvar="SLPT_NO_MODEL",
        help="Review-only: serve the datastore, Next Sample, review, double reading and the admin API with no model, "
             "training or GPU")] = False,
    pretrain_if_missing: Annotated[bool, typer.Option(
        envvar="SLPT_PRETRAIN_IF_MISSING",
        help="Install the backbone that ships with the code when the configured backbone file does not exist")] = False,
) -> None:
    """Start the MONAI Label server: a thin wrapper over `monailabel start_server`.

    Its other options pass through unchanged, e.g. `--conf KEY VALUE` (repeatable) for app options. The Docker
    image runs it with no arguments: every option then comes from its SLPT_* variable.
    """
    from app.server import start_server
    from app.settings import AppSettings
    from app.studies import StudiesError, resolve_studies

    try:
        layout = resolve_studies(studies)
    except StudiesError as exc:
        raise fail(str(exc))
    extra = list(ctx.args)
    settings = AppSettings.from_conf(_conf_pairs(extra))
    auth = auth or settings.auth
    if not auth and not insecure and not is_loopback(host):
        raise fail(f"refusing to serve {host} with auth off: pass --auth (and create users with `slpt admin "
                   "create-user`), or --insecure to serve it open anyway")
    backbone = settings.backbone_path(layout.root)
    if pretrain_if_missing and not backbone.exists():
        install_demo_backbone(backbone)
    if not no_model:
        check_bundle(backbone)
    conf = ([("db", db)] if db else []) + ([("auth", "true")] if auth else []) + ([("no_model", "true")] if no_model else [])
    start_server(studies, host=host, port=port, conf=conf, extra_args=extra)


def _conf_pairs(args: list[str]) -> dict[str, str]:
    """The ``--conf KEY VALUE`` pairs among pass-through arguments."""
    return {args[i + 1]: args[i + 2] for i, arg in enumerate(args[:-2]) if arg == "--conf"}


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Checkpoint to write (a JSON of its config and metrics is written beside it)")],
    data: Annotated[Optional[Path], typer.Option(help="Upstream MSD-layout cohort with organ (and lesion) labels; default: the recipe's synthetic one, generated beside --out")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the cohort (one random patch per case and spacing each); default: the recipe's")] = None,
) -> None:
    """Pre-train a backbone with the project's recipe (models/recipes.py): the frozen network that prompts are tuned on.

    Without --data this re-makes the backbone that ships with the code, from its synthetic upstream cohort."""
    from models.errors import ModelError
    from models.recipes import LESION
    from models.training import progress_bar

    try:
        with progress_bar("pre-training") as report:
            metrics = LESION.make(out, data=data, epochs=epochs, progress=report)
    except ModelError as exc:
        raise fail(str(exc))
    typer.echo(json.dumps(metrics, indent=2))


@cli.command("model-info")
def model_info(
    backbone: Annotated[Optional[Path], typer.Option(help="Backbone checkpoint, MONAI bundle or nnU-Net v2 model folder (default: the default architecture)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object")] = False,
    num_prompts: Annotated[int, typer.Option(help="K, prompt sets")] = 3,
) -> None:
    """Parameter counts of the SLPT model: total, tunable (prompts + FPUs + head), fraction."""
    import math

    from models.adapters import adapt_backbone
    from models.backbone import BackboneConfig, build_backbone, config_path, load_backbone
    from models.bundle import is_folder_backbone, open_backbone
    from models.errors import ModelError
    from models.slpt import SLPTConfig, SLPTNet

    try:
        if backbone and is_folder_backbone(backbone):  # a MONAI bundle or an nnU-Net model folder
            network = open_backbone(backbone)[0]
        elif backbone:
            # Weights without a config JSON beside them (e.g. a bare state dict) are checked against the default one.
            network = load_backbone(backbone, None if config_path(backbone).is_file() else BackboneConfig())[0]
        else:
            network = build_backbone(BackboneConfig())
    except ModelError as exc:
        raise fail(str(exc))
    divisor = adapt_backbone(network).size_divisor  # the counts do not depend on the window; it must fit the network
    roi = (math.ceil(48 / divisor) * divisor,) * 3
    counts = SLPTNet(network, SLPTConfig(num_prompts=num_prompts, roi_size=roi)).parameter_counts()
    if as_json:
        typer.echo(json.dumps(counts))
    else:
        for key, value in counts.items():
            typer.echo(f"{key:>18}: {value}")


@cli.command("export-bundle")
def export_bundle(
    out: Annotated[Path, typer.Option(help="Bundle folder to write (must not exist)")],
    backbone: Annotated[Optional[Path], typer.Option(help="Backbone checkpoint (its JSON beside it); default: the one that ships with the code")] = None,
    model_version: Annotated[Optional[Path], typer.Option(help="A published model version (.slpt/models/<version>.pt in the studies folder) to export instead of the backbone; --backbone is then the one it was tuned on")] = None,
) -> None:
    """Write a backbone, or a published model version, as a MONAI bundle that `python -m monai.bundle run` (or any
    MONAI tool) loads and runs."""
    from models import bundle
    from models.errors import ModelError
    from models.recipes import EMBEDDED_BACKBONE

    try:
        if model_version is None:
            written = bundle.export_bundle(backbone or EMBEDDED_BACKBONE, out)
        else:
            written = bundle.export_model_bundle(model_version, backbone or EMBEDDED_BACKBONE, out)
    except ModelError as exc:
        raise fail(str(exc))
    typer.echo(f"wrote the MONAI bundle {written}: python -m monai.bundle run --config_file "
               f"{written / 'configs' / 'inference.json'} --bundle_root {written} --dataset_dir DIR --output_dir OUT")


@cli.command()
def demo(
    dir: Annotated[Path, typer.Option(help="Demo folder")] = Path("demo"),
    cases: Annotated[int, typer.Option(help="Volumes in the demo cohort")] = 60,
    size: Annotated[int, typer.Option(help="Edge length of the demo volumes (160: about 2.5 mm voxels, the working spacing)")] = 160,
) -> None:
    """Make what the demo needs if it is missing: a synthetic cohort and the pre-trained backbone.

    The backbone that ships with the code goes to the studies' default location (`<studies>/.slpt/backbone.pt`);
    existing files are kept.
    """
    from cohort.synth import generate_cohort

    studies = dir / "studies"
    if not (studies / "dataset.json").is_file():
        generate_cohort(studies, cases=cases, seed=0, size=size)
    backbone = studies / ".slpt" / "backbone.pt"
    if not backbone.is_file():
        install_demo_backbone(backbone)
    typer.echo(f"demo ready: studies {studies}, backbone {backbone}")


def check_bundle(backbone: Path) -> None:
    """Refuse to start on a backbone folder the server cannot use, with the folder's own words, before MONAI Label
    starts: a MONAI bundle (no liver class, preprocessing it cannot match, no adapter for its network) from its configs;
    an nnU-Net model by loading it whole (plans, labels, normalisation, checkpoint, weights against the plans), since
    its checkpoint is the part most likely to be wrong (a missing or unfinished fold, another configuration's)."""
    from models.bundle import bundle_info, is_bundle
    from models.errors import ModelError
    from models.nnunet import is_nnunet, read_nnunet

    try:
        if is_bundle(backbone):
            bundle_info(backbone).liver_class()
        elif is_nnunet(backbone):
            read_nnunet(backbone)[1].liver_class()
    except ModelError as exc:  # CheckpointError is one
        kind = "bundle" if is_bundle(backbone) else "nnU-Net model"
        raise fail(f"cannot serve with the backbone {kind} {backbone}: {exc}")


def install_demo_backbone(backbone: Path) -> None:
    """Put the backbone that ships with the code (checked by its sha256) at ``backbone``."""
    from models.errors import ModelError
    from models.recipes import install_embedded_backbone

    try:
        install_embedded_backbone(backbone)
    except ModelError as exc:
        raise fail(f"{exc} (`slpt pretrain --out FILE` re-makes one from the recipe)")
    typer.echo(f"installed the shipped backbone at {backbone}")


db_cli = typer.Typer(help="Database administration.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@db_cli.command("upgrade")
def db_upgrade(db: Annotated[str, typer.Option(help="SQLAlchemy database URL, e.g. postgresql://user@host/slpt")]) -> None:
    """Apply every pending schema migration (the server also does this when it starts)."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import normalise_url
    from db.migrate import head_revision, upgrade

    try:
        upgrade(db)
    except (SQLAlchemyError, ValueError) as exc:
        raise fail(f"cannot upgrade {normalise_url(db)}: {exc}")
    typer.echo(f"database at revision {head_revision()}")


admin_cli = typer.Typer(help="Accounts, from the shell.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin")


@admin_cli.command("create-user")
def admin_create_user(
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="admin, reviewer or annotator")],
    password: Annotated[Optional[str], typer.Option(help="Password for logging in from 3D Slicer (none: token only)")] = None,
    studies: Annotated[Optional[Path], typer.Option(help="Studies folder whose default SQLite database to use")] = None,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy database URL")] = None,
) -> None:
    """Create a user (creating and migrating the database if needed); print its new API token on the last line."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.accounts import create_account
    from db.engine import create_db_engine, default_db_url, session_factory
    from db.errors import DBError
    from db.migrate import upgrade

    if (studies is None) == (db is None):
        raise fail("give exactly one of --studies DIR or --db URL")
    if studies is not None:
        from app.studies import StudiesError, resolve_studies

        try:
            db = default_db_url(resolve_studies(studies).root)  # the database `slpt serve --studies` uses
        except StudiesError as exc:
            raise fail(str(exc))
    url = db
    try:
        upgrade(url)
        engine = create_db_engine(url)
        try:
            token = create_account(session_factory(engine), name, role, password)
        finally:
            engine.dispose()
    except DBError as exc:
        raise fail(str(exc))
    except SQLAlchemyError as exc:
        raise fail(f"database error: {exc}")
    typer.echo(f"created {role} {name!r}; API token (shown once):")
    typer.echo(token)


def command_line() -> str:
    """The command as typed, for a report's header."""
    import shlex
    import sys

    return shlex.join(["slpt", *sys.argv[1:]])
