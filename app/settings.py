"""App settings: the one place where MONAI Label's ``--conf KEY VALUE`` strings are parsed.

Every option can also come from the environment as ``SLPT_<KEY>`` (e.g. ``SLPT_DB``); a ``--conf`` value wins.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ImportString
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.schema import utcnow
from models.backbone import BackboneInfo
from models.cascade import CascadeConfig


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLPT_", extra="ignore")

    db: str = Field("", description="SQLAlchemy URL; empty = SQLite file <studies>/.slpt/slpt.db")
    lease_hours: float = Field(2.0, gt=0, description="How long a claimed volume stays reserved for its annotator")
    clock: ImportString[Callable[[], datetime]] = Field(
        utcnow, description="The leases' clock (claims, expiry, live-lease counts, work-batch leases): import path of a "
        "function returning the aware UTC time; default the system clock"
    )
    import_labels: bool = Field(
        False, description="Import an MSD folder's labelsTr/ as final labels (normally ground truth kept for simulations)"
    )
    backbone: str = Field("", description="Pre-trained backbone: our checkpoint (state dict, its JSON beside it), a MONAI "
                          "bundle folder or an nnU-Net v2 result folder (or one fold_N of it); empty = "
                          "<studies>/.slpt/backbone.pt")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'")
    train_steps: int = Field(200, gt=0, description="Prompt-tuning steps of one training run")
    train_gpus: int = Field(0, ge=0, description="GPUs one training uses data-parallel (DDP); 0 = all visible")
    num_prompts: int = Field(3, gt=0, description="K, the number of diversified prompt sets")
    round_size: int = Field(0, ge=0, description="Volumes per selection round; 0 = 2 x active annotators (at least 1)")
    round_candidates: int = Field(
        2000, ge=0, description="Volumes of the pool a new model version scores first, drawn stratified by TESLA's "
        "clusters; rounds select among them while the rest is scored in the background (0 = the whole pool)"
    )
    work_batch: int = Field(32, gt=0, description="Volumes per embedding or scoring batch that a replica leases")
    work_lease_s: float = Field(
        300.0, gt=0, description="How long a leased embedding or scoring batch stays reserved to its worker (renewed "
        "while it works); a dead replica's batch is taken again after this"
    )
    work_poll_s: float = Field(
        10.0, gt=0, description="How often each replica looks for embedding and scoring work (new volumes, a new "
        "model version) and joins it"
    )
    spacing: float = Field(2.5, gt=0, description="Working spacing in mm (isotropic) of training, inference and scoring")
    coarse_spacing: float = Field(5.0, gt=0, description="Spacing in mm at which the cascade's first stage finds the liver")
    roi_margin_mm: float = Field(15.0, ge=0, description="Margin around the found liver of the region the model segments")
    roi_size: int = Field(48, ge=16, description="Edge of the training patch / sliding window (multiple of 16)")
    max_upload_mb: int = Field(512, gt=0, description="Largest accepted image or label upload")
    label_writers: int = Field(
        1, gt=0, description="Label uploads validated and stored at once; more wait their turn (Next Sample never does)"
    )
    infer_workers: int = Field(1, gt=0, description="Segmentations that run at once")
    infer_queue: int = Field(4, ge=0, description="Segmentations that may wait; more get 503 with Retry-After")
    quality_interval_s: float = Field(
        30.0, ge=0, description="How often the background job measures new final labels against the model that served "
        "their claim (prospective quality); 0 = off"
    )
    stop_gain: float = Field(
        0.01, gt=0, description="Stopping advice: consider stopping when the next round's expected tumour-Dice gain is "
        "surely (whole 95 % interval) below this"
    )
    ui_session_minutes: float = Field(480.0, gt=0, description="Lifetime of a dashboard (/ui) login")
    datastore_list_max: int = Field(
        1000, ge=1, description="GET /datastore/?output=all lists every volume up to this many; above, the volumes under "
        "a lease and the labeled ones (this many at most), or one page with offset/limit"
    )
    auth: bool = Field(False, description="Require a login (database users) for every route but /info/, /auth, /health, docs")
    login_rate_user: str = Field(
        "10/minute", pattern=r"^\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?$",
        description="Login attempts one user name may make (any address), in the `limits` notation; more get 429"
    )
    login_rate_address: str = Field(
        "120/minute", pattern=r"^\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?$",
        description="Login attempts one address may make (any user name); more get 429"
    )
    login_lockout_failures: int = Field(
        10, ge=1, description="Wrong passwords for one user name within login_lockout_minutes that lock it"
    )
    login_lockout_failures_address: int = Field(
        50, ge=1, description="Wrong passwords from one address within login_lockout_minutes that lock the address"
    )
    login_lockout_minutes: float = Field(15.0, gt=0, description="How long a lockout lasts (and the failures' window)")
    token_minutes: float = Field(30.0, gt=0, description="Lifetime of an access token from /auth/token")
    secret_key: str = Field("", description="Access-token signing key; empty = one generated once and kept in the database")
    admin_user: str = Field("admin", description="Name of the first admin that admin_password / admin_token create")
    admin_password: str = Field("", description="Creates the first admin at start-up with this password (if absent)")
    admin_token: str = Field("", description="Gives the first admin this API token at start-up (stored hashed)")
    train_on: Literal["final", "approved"] = Field(
        "final", description="What trains: every volume's newest final label, or only final labels a reviewer approved "
        "(a double-read volume trains on its adjudicated label either way)"
    )
    no_model: bool = Field(
        False, description="Review-only mode: datastore, Next Sample, review, double reading and the admin API, with no "
        "model, training, scoring or GPU (`slpt serve --no-model`)"
    )

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> "AppSettings":
        """Parse MONAI Label's conf dict (all values are strings); unknown keys are ignored."""
        known = {k: v for k, v in (conf or {}).items() if k in cls.model_fields}
        return cls(**known)

    def cascade(self, backbone: BackboneInfo | None = None) -> CascadeConfig:
        """The geometry of the liver-ROI cascade (docs/design.md, "Geometry and the liver-ROI cascade"). A backbone
        that says how it was pre-trained (a MONAI bundle's preprocessing, an nnU-Net model's plans) gives the liver's class,
        the intensity normalisation and,
        unless set here, both spacings."""
        spacing, coarse = (self.spacing,) * 3, (self.coarse_spacing,) * 3
        if backbone is None:
            return CascadeConfig(spacing=spacing, coarse_spacing=coarse, margin_mm=self.roi_margin_mm)
        trained = backbone.metrics
        if "spacing" not in self.model_fields_set and trained.get("spacing"):
            spacing = tuple(trained["spacing"])
        if "coarse_spacing" not in self.model_fields_set and trained.get("coarse_spacing"):
            coarse = tuple(trained["coarse_spacing"])
        return CascadeConfig(
            spacing=spacing, coarse_spacing=coarse, margin_mm=self.roi_margin_mm, liver_class=backbone.liver_class(),
            **CascadeConfig.intensity_fields(backbone.intensity()),
        )

    def work(self) -> "WorkSettings":
        """How embedding and scoring are cut into leased batches (docs/design.md, "Work spread over replicas")."""
        from app.work import WorkSettings

        return WorkSettings(batch=self.work_batch, candidates=self.round_candidates, lease_s=self.work_lease_s, clock=self.clock)

    def work_dir(self, studies: Path) -> Path:
        """Folder for everything the server generates beside the studies (database, models, scores)."""
        return studies / ".slpt"

    def backbone_path(self, studies: Path) -> Path:
        return Path(self.backbone).expanduser().resolve() if self.backbone else self.work_dir(studies) / "backbone.pt"
