"""Published model versions: files under ``<studies>/.slpt/models``, rows in the ``model_versions`` table.

A version is written to a temporary file, renamed into place, and only then recorded: readers (the infer task, scoring)
always find either the previous complete version or the new complete one. Loaded networks are cached per version id.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from db.engine import write_session
from db.schema import ModelVersion
from db.model_versions import latest_model_version, next_model_version_id, record_model_version
from models.backbone import BackboneConfig, BackboneInfo
from models.bundle import backbone_info, open_backbone
from models.checkpoint import load_slpt, save_slpt
from models.slpt import SLPTNet
from storage.atomic import atomic_path


class NoModelError(LookupError):
    """No prompt model has been published yet (or no backbone is available)."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    network: SLPTNet


class ModelStore:
    def __init__(self, sessions: sessionmaker[Session], folder: Path, backbone_path: Path):
        self.sessions = sessions
        self.folder = Path(folder)
        self.backbone_path = Path(backbone_path)
        self._lock = threading.RLock()
        self._backbone: tuple[nn.Module, BackboneConfig] | None = None
        self._info: BackboneInfo | None = None
        self._loaded: LoadedModel | None = None
        self._older: LoadedModel | None = None  # the last older version asked for (the quality job's), kept apart

    def backbone(self) -> tuple[nn.Module, BackboneConfig]:
        """The frozen pre-trained backbone (our checkpoint or a MONAI bundle folder) and its config (loaded once)."""
        with self._lock:
            if self._backbone is None:
                if not self.backbone_path.exists():
                    raise NoModelError(
                        f"no pre-trained backbone at {self.backbone_path}: run `slpt pretrain` or pass --conf backbone PATH"
                    )
                network, self._info = open_backbone(self.backbone_path)
                self._backbone = network, self._info.config
            return self._backbone

    def info(self) -> BackboneInfo | None:
        """What the backbone is (label map, the spacing and HU window it was trained at), read without loading its
        weights; None while there is none. Raises :class:`models.errors.ModelError` for a backbone that cannot serve
        (e.g. a bundle with no liver class)."""
        with self._lock:
            if self._info is None and self.backbone_path.exists():
                self._info = backbone_info(self.backbone_path)
                self._info.liver_class()  # checked now: stage 1 cannot run without it
            return self._info

    def latest_version(self) -> str | None:
        with self.sessions() as session:
            version = latest_model_version(session)
            return version.id if version else None

    def latest(self) -> LoadedModel:
        """The newest published version, loaded (cached until a newer one is published)."""
        with self.sessions() as session:
            row = latest_model_version(session)
            if row is None:
                raise NoModelError("no prompt model has been trained yet: submit labels, then train the 'slpt' model")
            version, path = row.id, row.path
        with self._lock:
            if self._loaded is None or self._loaded.version != version:
                self._loaded = LoadedModel(version, load_slpt(path, self.backbone()[0]).eval())
            return self._loaded

    def version(self, version: str) -> LoadedModel:
        """One published version by id, loaded: the newest comes from ``latest``'s cache, an older one from a cache
        of its own, so measuring an old version never evicts the model that serves."""
        with self.sessions() as session:
            row = session.get(ModelVersion, version)
            if row is None or row.state != "published":
                raise NoModelError(f"no published model version {version!r}")
            path = row.path
        with self._lock:
            for cached in (self._loaded, self._older):
                if cached is not None and cached.version == version:
                    return cached
            self._older = LoadedModel(version, load_slpt(path, self.backbone()[0]).eval())
            return self._older

    def publish(self, network: SLPTNet, backbone_config: BackboneConfig, metrics: dict[str, Any]) -> str:
        """Write a new version atomically and record it; returns its id (e.g. ``v0003``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with write_session(self.sessions) as session:
            version = next_model_version_id(session)
            target = self.folder / f"{version}.pt"
            with atomic_path(target) as temp:
                save_slpt(network, temp, backbone_config, extra={"version": version, **metrics})
            counts = network.parameter_counts()
            record_model_version(
                session,
                version,
                path=str(target),
                kind=network.mode,
                metrics=metrics,
                tunable_params=int(counts["tunable_params"]),
            )
        return version
