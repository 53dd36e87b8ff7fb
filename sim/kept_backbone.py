"""A study's frozen backbone, made once and kept with its records (docs/design.md, "A study that spans sessions").

Every row of a study is measured on one backbone, so the backbone is part of the measurements: the first run copies
it into the records folder (``backbone.pt`` and its architecture, ``backbone.json``, beside it; at most
:data:`MAX_BACKBONE_BYTES`) and records the files' SHA-256 and the recipe that made it in ``run.json``. Every later
run, on any machine, resumes on that file: it checks the checksums against ``run.json`` and refuses a file that
differs, and it never makes a backbone again. Another CPU may round the same backbone's arithmetic differently in the
last bits; that is noise of the same kind as training on another CPU, not another backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.backbone import config_path
from sim import results as files
from sim.design import SimulationError
from sim.profiles import SimProfile
from storage.atomic import atomic_copy
from storage.digest import file_sha256

#: Name of the kept backbone inside the records folder (its architecture, ``backbone.json``, beside it).
BACKBONE_FILE = "backbone.pt"
#: The most a kept backbone (weights and architecture) may weigh: records are kept in git.
MAX_BACKBONE_BYTES = 10_000_000


@dataclass(frozen=True)
class KeptBackbone:
    """The backbone a study keeps: its weights file in the records, the SHA-256 of that file and of its architecture
    JSON, its size, and the recipe that made it (None for a backbone given with ``--backbone``)."""

    path: Path
    sha256: str
    json_sha256: str
    size: int
    recipe: dict | None

    def entry(self) -> dict:
        """What ``run.json`` records of it (under ``"backbone"``)."""
        return {"file": self.path.name, "sha256": self.sha256, "json_sha256": self.json_sha256, "bytes": self.size,
                "recipe": self.recipe}


def kept_backbone(records: Path, design: dict | None = None) -> KeptBackbone | None:
    """The backbone ``records`` keeps, its files checked against the SHA-256 in ``run.json``; None where the records
    keep none yet. Raises :class:`SimulationError` for a file that is missing or differs, and (where ``design`` is
    given) for records of another design: a run checks both before it makes anything."""
    if design is not None:
        try:
            files.check_identity(records, {"design": design}, write=False)
        except files.RunFolderError as exc:
            raise SimulationError(str(exc)) from exc
    entry = files.read_run(records).get("backbone")
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise SimulationError(
            f"{records / 'run.json'} is from the earlier simulator, which re-made the backbone on each machine and "
            "kept no backbone file: its rows cannot be resumed; start a new --records folder"
        )
    path = records / entry["file"]
    for file, recorded in ((path, entry["sha256"]), (config_path(path), entry["json_sha256"])):
        if not file.is_file():
            raise SimulationError(
                f"{file} is missing: the rows in {records} were measured on the backbone run.json records "
                f"(SHA-256 {recorded[:12]}); restore it from version control"
            )
        found = file_sha256(file)
        if found != recorded:
            raise SimulationError(
                f"{file} has SHA-256 {found[:12]}, but run.json records {recorded[:12]}: the rows in {records} were "
                "measured on that file; restore it from version control, or start a new --records folder"
            )
    return KeptBackbone(path, entry["sha256"], entry["json_sha256"], int(entry["bytes"]), entry.get("recipe"))


def keep_backbone(records: Path, source: Path | None, design: dict, recipe: dict | None = None) -> KeptBackbone:
    """The study's backbone, kept in ``records``: the one they keep already (``source``, where given, must be that
    file or hold the same bytes), else ``source`` (with its ``.json``) copied in and recorded in ``run.json`` beside
    the design, with its checksums and ``recipe`` (None: the user's own backbone). A design other than the recorded
    one, or a backbone over :data:`MAX_BACKBONE_BYTES`, is refused before anything is written."""
    kept = kept_backbone(records, design)
    if kept is not None:
        if source is not None and source.resolve() != kept.path.resolve() and file_sha256(source) != kept.sha256:
            raise SimulationError(
                f"{records} keeps another backbone (SHA-256 {kept.sha256[:12]}) than {source} "
                f"({file_sha256(source)[:12]}): its rows were measured on that one; use a fresh --records folder"
            )
        return kept
    if source is None:
        raise SimulationError(f"{records} keeps no backbone yet: give --backbone FILE or --synthetic")
    if not config_path(source).is_file():
        raise SimulationError(f"the backbone {source} has no architecture file {config_path(source).name} beside it")
    size = source.stat().st_size + config_path(source).stat().st_size
    if size > MAX_BACKBONE_BYTES:
        raise SimulationError(
            f"the backbone {source} weighs {size / 1e6:.1f} MB, more than the {MAX_BACKBONE_BYTES / 1e6:g} MB a study "
            "keeps in its records: use a smaller backbone"
        )
    target = records / BACKBONE_FILE
    for origin, copy in ((source, target), (config_path(source), config_path(target))):
        if origin.resolve() != copy.resolve():
            atomic_copy(origin, copy)
    kept = KeptBackbone(target, file_sha256(target), file_sha256(config_path(target)), size, recipe)
    files.check_identity(records, {"design": design, "backbone": kept.entry()})
    return kept
