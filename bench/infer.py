"""``slpt bench infer``: time and memory from an image file to a label on its own grid, cascade vs whole volume.

One generated CT of real size (default 512 × 512 × 200 voxels at 0.8 × 0.8 × 2.5 mm, :func:`cohort.phantom.render_case`
on a non-cubic grid, written as ``.nii.gz``) is segmented by the same prompt-mode :class:`~models.slpt.SLPTNet` in two
ways (rows), in one run:

- **cascade** (what the server runs): the steps of :func:`models.inference.segment_volume` ``(model, path)`` — load,
  RAS, resample to the working spacing, stage 1 finds the liver ROI on a coarse resample, stage 2 slides the window
  over the ROI with the K prompts batched — then :meth:`~models.inference.VolumePrediction.label_on_original`;
- **whole volume**: the same with ``whole_volume=True`` (no stage 1; the window slides over the whole volume at the
  same working spacing), then the same ``label_on_original``.

Per row: the time of a request, from the file path to a uint8 label on the image's grid (median and range over
``repeats`` requests after one untimed warm-up request), and the peak memory of the row's own process (``VmHWM``,
the resident-set high-water mark; on CUDA also ``torch.cuda.max_memory_allocated``). Each row runs in its own new
process, forked from a :mod:`multiprocessing` fork server that has only imported torch, MONAI and the models, so one
row's peak cannot hide the other's. Every request runs :func:`request`: ``segment_volume``'s steps
(:func:`~models.cascade.to_working`, :func:`~models.inference.roi_of`, :func:`~models.inference.predict`), then
``label_on_original``; the warm-up request times each phase.

The model: ``SLPTConfig`` defaults (K = 3, ``roi_size`` 48³, working spacing 2.5 mm, stage 1 at 5 mm) over the
backbone of ``--backbone FILE`` (:func:`models.backbone.load_backbone`), or over a randomly initialised default
:class:`~models.backbone.BackboneConfig` backbone, in which case stage 1 finds no real liver and the report says so.

``--roi-from-label`` is for backbones with random weights (a family's architecture without its trained weights, as in
docs/results/backbones.md): their stage 1 finds no liver, or calls most of the body liver, so every request segments
(nearly) the whole volume, which is not what a trained backbone costs. With it, the cascade row still runs stage 1 (the
coarse pass, timed as it is) but stage 2 segments the ROI a stage 1 that finds exactly this case's liver would give:
the generated liver label's bounding box mapped onto the working grid and grown by the cascade's margin
(:func:`label_roi`). The row's name and the report say so. ``--no-whole-volume`` leaves out the whole-volume row
(slow on a CPU, and not needed for the cascade's time).

Checks: the labels have the image's shape and affine (the affine read back from the written file); the liver Dice of
each row against the generated ground truth, whether the ROI holds all of the ground-truth liver, and how far the two
rows' labels agree, are reported.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

from bench import BenchError
from bench.harness import (
    Clock, Environment, cuda_peak_bytes, device_problem, human_bytes, in_forkserver, load_average, markdown_table,
    measure_environment, peak_resident_bytes, report_header, reset_cuda_peak, resident_bytes,
)

CASCADE = "cascade (liver ROI)"
#: The cascade row's name with ``--roi-from-label``.
CASCADE_FROM_LABEL = "cascade (liver ROI from the label)"
WHOLE_VOLUME = "whole-volume sliding window"
#: Goals (issue 10, item 6), on 2 CPU cores: a volume in at most this many seconds with the cascade ...
TARGET_CPU_SECONDS = 30.0
#: ... and the cascade at least this many times faster than a whole-volume sliding window.
TARGET_SPEEDUP = 3.0
#: Smallest edge (voxels) of the generated volume, as for ``slpt synth``.
MIN_EDGE = 8
#: Sliding-window overlap of :func:`models.inference.segment_volume` (its default).
OVERLAP = 0.25
#: What the fork server imports once, so that every measuring process starts with them loaded.
PRELOAD = ["torch", "monai", "nibabel", "models.slpt", "models.inference", "models.backbone"]
#: The phases of a request, in order (the warm-up request times each; the whole-volume row skips stage 1).
PHASE_LOAD = "load, RAS, resample to the working spacing"
PHASE_STAGE1 = "stage 1: find the liver (coarse pass)"
PHASE_STAGE2 = "stage 2: K prompts batched, sliding window"
PHASE_BACK = "back to the image's grid (label_on_original)"
PHASES = (PHASE_LOAD, PHASE_STAGE1, PHASE_STAGE2, PHASE_BACK)
T = TypeVar("T")

if TYPE_CHECKING:  # the models are imported in the measuring processes, not by the CLI
    from models.cascade import LiverROI
    from models.inference import VolumePrediction

#: What to try when a measuring process dies.
MEMORY_HINT = "try a smaller --shape"


@dataclass(frozen=True)
class InferBenchConfig:
    """What ``slpt bench infer`` measures.

    Attributes:
        shape: (X, Y, Z) voxels of the generated CT.
        spacing: (dx, dy, dz) mm of the generated CT; square pixels (dx = dy).
        backbone: pre-trained backbone checkpoint (its ``.json`` beside it, else the default architecture);
            None: a randomly initialised default backbone.
        repeats: timed requests per row, after one untimed warm-up request.
        working_spacing: isotropic working spacing (mm) of stage 2 and of the whole-volume row; stage 1 looks
            at twice that (the ``SLPTConfig`` defaults: 2.5 and 5 mm).
        roi: edge of the cubic sliding window (``SLPTConfig.roi_size``, default 48).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        threads: torch intra-op threads of the measuring processes; 0 = torch's default.
        seed: the generated case (case 0 of ``slpt synth --seed``'s plan) and the random weights.
        roi_from_label: the cascade row segments the ROI of the generated case's own liver label (:func:`label_roi`)
            instead of the ROI stage 1 found; stage 1 still runs and is timed.
        whole_volume: also measure the whole-volume row (the baseline).
    """

    shape: tuple[int, int, int] = (512, 512, 200)
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    backbone: Path | None = None
    repeats: int = 3
    working_spacing: float = 2.5
    roi: int = 48
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    roi_from_label: bool = False
    whole_volume: bool = True


@dataclass(frozen=True)
class ModelFacts:
    """The model the rows run, as a measuring process built it (``backbone``: in words)."""

    backbone: str
    random_backbone: bool
    num_prompts: int
    roi_size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    coarse_spacing: tuple[float, float, float]
    margin_mm: float


@dataclass(frozen=True)
class Volume:
    """The generated CT: its file, grid and ground-truth liver."""

    path: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: list[list[float]]  # read back from the written file
    file_bytes: int
    group: str
    lesions: bool
    liver_ml: float
    liver_box: tuple[tuple[int, int, int], tuple[int, int, int]]  # [start, stop) on the image's grid
    render_s: float


def label_roi(volume: Volume, working, margin_mm: float) -> LiverROI:
    """The ROI stage 2 gets from a stage 1 that finds exactly the generated liver (``--roi-from-label``).

    The liver label's bounding box on the image's grid (``volume.affine``, as written) mapped onto the working grid
    and grown by ``margin_mm``, through :func:`models.geometry.box_on_grid`, as :func:`models.cascade.roi_from_pass`
    maps stage 1's box from the coarse grid. ``working``: the (1, X, Y, Z) working-grid volume of the request.
    """
    from models.cascade import LiverROI
    from models.geometry import Box, affine_of, box_on_grid

    box = box_on_grid(Box(*volume.liver_box), np.asarray(volume.affine), affine_of(working), working.shape,
                      margin_mm=margin_mm)
    return LiverROI(box, found=True, liver_ml=volume.liver_ml)


@dataclass(frozen=True)
class RowSpec:
    """One row, sent to its own process."""

    name: str
    whole_volume: bool
    bench: InferBenchConfig
    volume: Volume
    device: str  # resolved

    @property
    def roi_from_label(self) -> bool:
        """Stage 2 segments :func:`label_roi`, not stage 1's ROI (the cascade row with ``--roi-from-label``)."""
        return self.bench.roi_from_label and not self.whole_volume


@dataclass
class RowResult:
    """What one row measured (times in seconds, memory in bytes)."""

    name: str
    times_s: list[float]
    phases_s: dict[str, float]  # the warm-up request, phase by phase
    roi_found: bool  # what stage 1 found (False also for the whole-volume row, which has no stage 1)
    roi_start: tuple[int, int, int]  # the region stage 2 segmented, on the working grid
    roi_stop: tuple[int, int, int]
    roi_liver_ml: float  # the liver stage 1 saw
    roi_on_image: tuple[tuple[int, int, int], tuple[int, int, int]]  # the ROI's box on the image's grid
    working_shape: tuple[int, int, int]
    windows: int
    rss_before_bytes: int
    peak_rss_bytes: int
    cuda_peak_bytes: int | None
    label_shape: tuple[int, ...]
    label_affine: list[list[float]]
    label_counts: list[int]  # voxels per class on the image's grid
    label: np.ndarray = field(repr=False)  # (X, Y, Z) uint8 on the image's grid
    roi_from_label: bool = False  # the region came from the liver label (label_roi), not from stage 1

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def roi_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.roi_start, self.roi_stop))


@dataclass
class InferBenchResult:
    """The rows of one run and the checks on them; ``rows[0]`` is the cascade, ``rows[1]`` (unless
    ``--no-whole-volume``) the whole volume."""

    config: InferBenchConfig
    environment: Environment
    model: ModelFacts
    volume: Volume
    rows: list[RowResult]
    liver_dice: dict[str, float]  # row -> Dice of its liver (classes >= 1) against the ground-truth liver
    agreement_dice: float | None  # Dice of the two rows' foregrounds (None: one row)
    label_equal_fraction: float | None  # voxels where the two labels are equal (None: one row)

    @property
    def cascade(self) -> RowResult:
        return self.rows[0]

    @property
    def whole(self) -> RowResult | None:
        return self.rows[1] if len(self.rows) > 1 else None

    @property
    def speedup(self) -> float | None:
        """Whole-volume ÷ cascade, median request times (None: no whole-volume row)."""
        return None if self.whole is None else self.whole.median_s / self.cascade.median_s

    @property
    def roi_holds_liver(self) -> bool:
        (start, stop), (roi_start, roi_stop) = self.volume.liver_box, self.cascade.roi_on_image
        return all(a <= c and d <= b for a, b, c, d in zip(roi_start, roi_stop, start, stop))

    def shape_and_affine_ok(self, row: RowResult) -> bool:
        return tuple(row.label_shape) == tuple(self.volume.shape) and np.allclose(
            row.label_affine, self.volume.affine, atol=1e-4)


# ---- arguments ---------------------------------------------------------------------------------------------------


def parse_triple(text: str, option: str, kind: type) -> tuple:
    """``"512,512,200"`` (or ``512x512x200``) -> (512, 512, 200) of ``kind``; BenchError naming ``option``."""
    parts = [p for p in text.replace("x", ",").replace("×", ",").split(",") if p.strip()]
    try:
        values = tuple(kind(p.strip()) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise BenchError(f"{option} needs 3 comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}")
    return values


def check_config(cfg: InferBenchConfig) -> None:
    """Every problem with ``cfg`` in one BenchError, before anything is generated or measured."""
    problems = []
    if min(cfg.shape) < MIN_EDGE:
        problems.append(f"--shape needs every edge >= {MIN_EDGE} voxels, got {'×'.join(map(str, cfg.shape))}")
    if min(cfg.spacing) <= 0 or not all(map(math.isfinite, cfg.spacing)):
        problems.append(f"--spacing needs 3 positive mm, got {cfg.spacing}")
    elif cfg.spacing[0] != cfg.spacing[1]:
        problems.append(f"--spacing needs square pixels (dx = dy, axial CT), got {cfg.spacing}")
    if cfg.repeats < 1:
        problems.append(f"--repeats must be at least 1, got {cfg.repeats}")
    if cfg.threads < 0:
        problems.append(f"--threads must be at least 0 (0: torch's default), got {cfg.threads}")
    if not cfg.working_spacing > 0:
        problems.append(f"--working-spacing must be positive mm, got {cfg.working_spacing}")
    if cfg.roi < 1:
        problems.append(f"--roi must be at least 1, got {cfg.roi}")
    if problem := device_problem(cfg.device):
        problems.append(problem)
    if cfg.backbone is not None and not Path(cfg.backbone).exists():
        problems.append(f"--backbone {cfg.backbone} does not exist")
    if problems:
        raise BenchError("; ".join(problems))


# ---- the measuring processes -------------------------------------------------------------------------------------


def build_model(cfg: InferBenchConfig):
    """(the prompt-mode SLPTNet of the benchmark in eval mode on the CPU, the backbone in words, random?).

    Raises:
        BenchError: a checkpoint that cannot be loaded, or a window the backbone cannot take.
    """
    import torch

    from models.backbone import BackboneConfig, BackboneInfo, build_backbone, config_path, load_backbone
    from models.bundle import is_folder_backbone, open_backbone
    from models.cascade import CascadeConfig
    from models.errors import ModelError
    from models.slpt import SLPTConfig, SLPTNet

    torch.manual_seed(cfg.seed)
    try:
        if cfg.backbone is not None:
            if is_folder_backbone(cfg.backbone) or config_path(cfg.backbone).is_file():
                backbone, info = open_backbone(cfg.backbone)
                backbone_config, metrics, liver = info.config, info.metrics, info.liver_class()
            else:  # bare weights: the default architecture
                backbone, backbone_config = load_backbone(cfg.backbone, BackboneConfig())
                metrics, liver = {}, 1
            described = f"`{cfg.backbone}` ({_describe(backbone_config)}{_metrics(metrics)})"
        else:
            backbone_config = BackboneConfig()
            backbone = build_backbone(backbone_config)
            described = f"randomly initialised default backbone ({_describe(backbone_config)}; seed {cfg.seed})"
            metrics, liver = {}, 1
        ws = float(cfg.working_spacing)
        model = SLPTNet(backbone, SLPTConfig(
            mode="prompt", roi_size=(cfg.roi,) * 3, seed=cfg.seed,
            cascade=CascadeConfig(spacing=(ws,) * 3, coarse_spacing=(2 * ws,) * 3, liver_class=liver,
                                  **CascadeConfig.intensity_fields(BackboneInfo(backbone_config, metrics).intensity())),
        ))
    except ModelError as exc:  # CheckpointError is one
        raise BenchError(str(exc)) from exc
    return model.eval(), described, cfg.backbone is None


def probe(cfg: InferBenchConfig, load: float | None) -> tuple[Environment, ModelFacts]:
    """Resolve the device, build the model once (run in a measuring process); ``load``: the load average at the start.

    Raises:
        BenchError: see :func:`bench.harness.resolve_device` and :func:`build_model`.
    """
    env = measure_environment(cfg.device, threads=cfg.threads, load=load)
    model, described, random_backbone = build_model(cfg)
    c = model.config
    return env, ModelFacts(
        backbone=described, random_backbone=random_backbone, num_prompts=model.num_prompts,
        roi_size=tuple(c.roi_size), spacing=tuple(c.cascade.spacing), coarse_spacing=tuple(c.cascade.coarse_spacing),
        margin_mm=float(c.cascade.margin_mm),
    )


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float = OVERLAP) -> int:
    """Sliding windows MONAI's ``sliding_window_inference`` runs over ``shape`` with windows ``roi``."""
    count = 1
    for size, edge in zip(shape, roi):
        if size > edge:
            interval = max(1, int(edge * (1 - overlap)))
            count *= math.ceil((size - edge) / interval) + 1
    return count


def measure_row(spec: RowSpec) -> RowResult:
    """Build the model, run one warm-up request phase by phase, then ``repeats`` timed requests (new process).

    Raises:
        BenchError: the model failed on the volume (a :class:`~models.errors.ModelError`).
    """
    from models.errors import ModelError

    try:
        return _measure_row(spec)
    except ModelError as exc:
        raise BenchError(f"{spec.name}: {exc}") from exc


def _untimed(_phase: str, work: Callable[[], T]) -> T:
    return work()


class Answer(NamedTuple):
    """What one request of :func:`request` gives."""

    prediction: VolumePrediction  # its roi is the region stage 2 segmented
    stage1: LiverROI  # what stage 1 found (on the whole-volume row: the whole volume, not found)
    working_shape: tuple[int, int, int]


def request(model, spec: RowSpec, lap: Callable[[str, Callable[[], T]], T] = _untimed) -> Answer:
    """One request of the row, from the file path to the prediction: the steps of
    :func:`models.inference.segment_volume` (``whole_volume`` as the row says), each phase run through
    ``lap(phase, work)`` (the warm-up times them). With ``--roi-from-label`` the cascade row runs stage 1 as it is,
    then segments :func:`label_roi` instead of the ROI stage 1 found.

    Returns the prediction before ``label_on_original`` (the caller runs that).
    """
    from models.cascade import to_working
    from models.geometry import affine_of
    from models.inference import VolumePrediction, predict, roi_of

    cascade = model.config.cascade
    original, working = lap(PHASE_LOAD, lambda: to_working(spec.volume.path, cascade))
    if spec.whole_volume:
        found = roi = roi_of(model, working, None, whole_volume=True)
    else:
        found = roi = lap(PHASE_STAGE1, lambda: roi_of(model, working, None))
        if spec.roi_from_label:
            roi = label_roi(spec.volume, working, cascade.margin_mm)
    crop = roi.box.crop(working)
    intensity = cascade.intensity.for_volume(working)
    prediction = lap(PHASE_STAGE2, lambda: predict(model, crop[0].as_tensor(), overlap=OVERLAP, intensity=intensity))
    return Answer(
        VolumePrediction(prediction=prediction, roi=roi, roi_affine=affine_of(crop),
                         original_affine=affine_of(original), original_shape=tuple(int(s) for s in original.shape[1:])),
        found, tuple(int(s) for s in working.shape[1:]),
    )


def _measure_row(spec: RowSpec) -> RowResult:
    import torch

    from models.geometry import Box, box_on_grid

    cfg, device = spec.bench, torch.device(spec.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, _described, _random = build_model(cfg)
    model.to(device)
    rss_before = resident_bytes()
    if device.type == "cuda":
        reset_cuda_peak(device)

    # Warm-up: the request's phases one by one, each timed.
    phases: dict[str, float] = {}
    clock = Clock(device)

    def lap(name: str, work: Callable[[], T]) -> T:
        out, phases[name] = clock.time(work)
        return out

    warm_up = request(model, spec, lap)
    lap(PHASE_BACK, warm_up.prediction.label_on_original)
    del warm_up

    times, answer, label = [], None, None
    for _ in range(cfg.repeats):
        del answer, label  # the previous request's output is not kept alive during the next one
        clock.start()
        answer = request(model, spec)
        label = answer.prediction.label_on_original()
        times.append(clock.stop())
    peak, cuda_peak = peak_resident_bytes(), cuda_peak_bytes(device)

    result, found, working_shape = answer
    box = result.roi.box
    on_image = box_on_grid(Box.whole(box.shape), result.roi_affine, result.original_affine, result.original_shape)
    return RowResult(
        name=spec.name, times_s=times, phases_s=phases, roi_found=bool(found.found),
        roi_start=tuple(int(v) for v in box.start), roi_stop=tuple(int(v) for v in box.stop),
        roi_liver_ml=float(found.liver_ml), roi_on_image=(tuple(on_image.start), tuple(on_image.stop)),
        working_shape=working_shape,
        windows=window_count(box.shape, model.config.roi_size), rss_before_bytes=rss_before, peak_rss_bytes=peak,
        cuda_peak_bytes=cuda_peak, label_shape=tuple(int(s) for s in label.shape),
        label_affine=np.asarray(result.original_affine, dtype=np.float64).tolist(),
        label_counts=np.bincount(label.ravel(), minlength=model.config.num_classes).tolist(), label=label,
        roi_from_label=spec.roi_from_label,
    )


# ---- the run -----------------------------------------------------------------------------------------------------


def generate_volume(cfg: InferBenchConfig, folder: Path) -> tuple[Volume, np.ndarray]:
    """Render case 0 of seed ``cfg.seed`` on the benchmark grid, write it as ``.nii.gz``; (volume, liver mask)."""
    import nibabel as nib

    from cohort.msd import write_nifti_gz
    from cohort.phantom import render_case
    from cohort.synth import case_plan, case_rng

    group, has_tumour = case_plan(cfg.seed, 0)
    start = time.perf_counter()
    try:
        phantom = render_case(case_rng(cfg.seed, 0), group, cfg.shape[0], with_tumour=has_tumour,
                              shape=cfg.shape, spacing=cfg.spacing)
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    path = folder / "ct_0000.nii.gz"
    write_nifti_gz(path, phantom.image, phantom.grid.affine)
    render_s = time.perf_counter() - start
    liver = phantom.liver
    hits = np.argwhere(liver)
    box = (tuple(int(v) for v in hits.min(axis=0)), tuple(int(v) + 1 for v in hits.max(axis=0)))
    voxel_ml = float(np.prod(cfg.spacing)) / 1000.0
    volume = Volume(
        path=str(path), shape=tuple(int(s) for s in phantom.image.shape), spacing=tuple(map(float, cfg.spacing)),
        affine=np.asarray(nib.load(str(path)).affine, dtype=np.float64).tolist(), file_bytes=path.stat().st_size,
        group=group.name, lesions=bool(phantom.tumour.any()), liver_ml=float(liver.sum()) * voxel_ml,
        liver_box=box, render_s=render_s,
    )
    return volume, liver


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_benchmark(cfg: InferBenchConfig, progress: Callable[[str], None] = lambda _msg: None) -> InferBenchResult:
    """Generate the CT, then measure the cascade row and (unless ``cfg.whole_volume`` is False) the whole-volume
    row, each in its own new process.

    Raises:
        BenchError: bad arguments, a model that cannot be built, or a measuring process that died.
    """
    check_config(cfg)
    load = load_average()  # before the fork server adds its own
    env, model = in_forkserver(probe, cfg, load, preload=PRELOAD, what="checking the device and the model",
                               hint=MEMORY_HINT)
    with tempfile.TemporaryDirectory(prefix="slpt-bench-infer-") as folder:
        progress(f"generating a {'×'.join(map(str, cfg.shape))} CT")
        volume, liver = generate_volume(cfg, Path(folder))
        plan = [(CASCADE_FROM_LABEL if cfg.roi_from_label else CASCADE, False)]
        if cfg.whole_volume:
            plan.append((WHOLE_VOLUME, True))
        rows = []
        for name, whole in plan:
            progress(f"measuring: {name}")
            spec = RowSpec(name, whole, cfg, volume, env.device)
            rows.append(in_forkserver(measure_row, spec, preload=PRELOAD, what=name, hint=MEMORY_HINT))
    both = rows if len(rows) == 2 else None
    return InferBenchResult(
        config=cfg, environment=env, model=model, volume=volume, rows=rows,
        liver_dice={row.name: dice(row.label >= 1, liver) for row in rows},
        agreement_dice=None if both is None else dice(both[0].label >= 1, both[1].label >= 1),
        label_equal_fraction=None if both is None else float(np.mean(both[0].label == both[1].label)),
    )


# ---- the report --------------------------------------------------------------------------------------------------


def format_table(result: InferBenchResult) -> str:
    """Markdown table, one row per way of segmenting."""
    cuda = result.environment.device == "cuda"
    columns = ["row", "region segmented (working grid)", "sliding windows", "time to label: median (s)", "range (s)",
               "peak RSS", "RSS before the first request", *(["CUDA peak allocated"] if cuda else []),
               "label shape, affine"]
    rows = []
    spacing = result.model.spacing
    for row in result.rows:
        mm = "×".join(f"{n * s:.0f}" for n, s in zip(row.roi_shape, spacing))
        region = f"{'×'.join(map(str, row.roi_shape))} voxels ({mm} mm)"
        check = "same as the image" if result.shape_and_affine_ok(row) else "DIFFERENT from the image"
        cells = [
            row.name, region, str(row.windows), f"{row.median_s:.3f}",
            f"{min(row.times_s):.3f}–{max(row.times_s):.3f}", human_bytes(row.peak_rss_bytes),
            human_bytes(row.rss_before_bytes),
        ]
        if cuda:
            cells.append(human_bytes(row.cuda_peak_bytes or 0))
        cells.append(f"{'×'.join(map(str, row.label_shape))}, {check}")
        rows.append(cells)
    return markdown_table(columns, rows, "llrrrrr" + ("r" if cuda else "") + "l")


def format_verdicts(result: InferBenchResult) -> str:
    """The ratio and one line per goal, each computed from the medians in the table."""
    cascade, speedup = result.cascade, result.speedup
    if speedup is None:
        lines = ["- Ratio whole-volume ÷ cascade: not measured (`--no-whole-volume`)"]
    else:
        lines = [f"- Ratio whole-volume ÷ cascade: {speedup:.2f}× (median time to label)"]
    if result.environment.device == "cpu":
        mark = "met" if cascade.median_s <= TARGET_CPU_SECONDS else "MISSED"
        lines.append(f"- Goal: cascade ≤ {TARGET_CPU_SECONDS:.0f} s per volume on CPU — {mark}: "
                     f"median {cascade.median_s:.3f} s")
    else:
        lines.append(f"- Goal: cascade ≤ {TARGET_CPU_SECONDS:.0f} s per volume on CPU — not applicable: measured on "
                     f"{result.environment.device}")
    if speedup is None:
        lines.append(f"- Goal: cascade ≥ {TARGET_SPEEDUP:.0f}× faster than whole-volume — not measured "
                     "(`--no-whole-volume`)")
    else:
        mark = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
        lines.append(f"- Goal: cascade ≥ {TARGET_SPEEDUP:.0f}× faster than whole-volume — {mark}: {speedup:.2f}×")
    return "\n".join(lines)


def format_stage1(result: InferBenchResult) -> str:
    """What stage 1 found, the ROI stage 2 segmented, against the generated ground truth."""
    model, row, vol = result.model, result.cascade, result.volume
    mm = " × ".join(f"{n * s:.0f}" for n, s in zip(row.roi_shape, model.spacing))
    work = " × ".join(map(str, row.working_shape))
    where = (f"on the working grid ({work} voxels at {model.spacing[0]:g} mm): voxels "
             f"{list(row.roi_start)}–{list(row.roi_stop)}, {' × '.join(map(str, row.roi_shape))} = "
             f"{math.prod(row.roi_shape):,} voxels, {mm} mm")
    found = f"{'true' if row.roi_found else 'false'} — liver seen by stage 1: {row.roi_liver_ml:.0f} ml " \
            f"(ground truth {vol.liver_ml:.0f} ml)"
    if row.roi_from_label:
        lines = [
            f"- **ROI from the label (`--roi-from-label`)**: stage 2 segmented the generated case's own liver label's "
            f"bounding box grown by the cascade's {model.margin_mm:g} mm margin (the ROI a stage 1 that finds exactly "
            f"this liver gives), not the ROI stage 1 found; {where}",
            f"- Stage 1 ran as it is, timed within every request, its ROI not used: ROI found: {found}"
            + ("" if row.roi_found else " (no liver found: on its own the cascade would segment the whole volume)"),
        ]
    else:
        lines = [
            f"- ROI found: {found}; ROI {where}"
            + ("" if row.roi_found else " (no liver found: the whole volume, the fallback)"),
        ]
    lines += [
        f"- ROI holds all of the ground-truth liver: {'yes' if result.roi_holds_liver else 'no'} (liver box on the "
        f"image's grid {list(vol.liver_box[0])}–{list(vol.liver_box[1])}, ROI there "
        f"{list(row.roi_on_image[0])}–{list(row.roi_on_image[1])})",
    ]
    if model.random_backbone and row.roi_from_label:
        lines.append(
            "- **The backbone is randomly initialised (no `--backbone`): stage 1 finds no real liver**; stage 2's ROI "
            "came from the label, so the cascade's time is what it costs with a backbone whose stage 1 finds this "
            "liver, not its segmentation."
        )
    elif model.random_backbone:
        lines.append(
            "- **The backbone is randomly initialised (no `--backbone`): stage 1 finds no real liver.** The ROI above "
            "is whatever a random network calls liver (found: "
            f"{'true' if row.roi_found else 'false'}), so the cascade's time is not what a pre-trained backbone "
            "gives; run with `--backbone FILE` for a meaningful cascade row."
        )
    return "\n".join(lines)


def format_checks(result: InferBenchResult) -> str:
    rows = result.rows
    ok = all(result.shape_and_affine_ok(row) for row in rows)
    dices = "; ".join(f"{row.name} {result.liver_dice[row.name]:.3f}" for row in rows)
    counts = "; ".join(f"{row.name} {row.label_counts}" for row in rows)
    lines = [
        f"- {'Both labels' if len(rows) == 2 else 'The label'} on the image's grid (shape "
        f"{'×'.join(map(str, result.volume.shape))} and affine of the written file): {'yes' if ok else 'NO'}",
        f"- Liver Dice (label ≥ 1) against the generated ground truth: {dices}",
    ]
    if result.agreement_dice is None:
        lines.append(f"- Voxels per class (background, liver, tumour): {counts}")
    else:
        lines.append(f"- The two rows agree: foreground Dice {result.agreement_dice:.3f}, identical label on "
                     f"{result.label_equal_fraction:.2%} of the voxels; voxels per class (background, liver, tumour): "
                     f"{counts}")
    return "\n".join(lines)


def format_phases(result: InferBenchResult) -> str:
    rows = [
        [name, *(f"{row.phases_s[name]:.2f} s" if name in row.phases_s else "— (skipped)" for row in result.rows)]
        for name in PHASES
    ]
    return markdown_table(["phase (warm-up request)", *(row.name for row in result.rows)], rows,
                          "l" + "r" * len(result.rows))


def format_report(result: InferBenchResult, command: str) -> str:
    """The whole markdown report: how it was measured, the table, stage 1, the checks, the ratio and the goals."""
    cfg, env, model, vol = result.config, result.environment, result.model, result.volume
    extent = " × ".join(f"{n * s:.0f}" for n, s in zip(vol.shape, vol.spacing))
    roi = "×".join(map(str, model.roi_size))
    if env.device == "cuda":
        memory = ("peak resident set (`VmHWM`) of the row's own process and `torch.cuda.max_memory_allocated` after "
                  "`reset_peak_memory_stats` (model already on the GPU)")
    else:
        memory = "peak resident set (`VmHWM`) of the row's own process"
    request_line = (
        "Request: the steps of `segment_volume(model, path)` (cascade) or `segment_volume(model, path, "
        "whole_volume=True)`, then `label_on_original()`: from the file path to a uint8 label on the image's grid")
    if cfg.roi_from_label:
        request_line += (
            f"; **with `--roi-from-label`**: the cascade row runs stage 1 as it is, then segments the generated liver "
            f"label's bounding box grown by the {model.margin_mm:g} mm margin instead of the ROI stage 1 found")
    title = "Inference on a CT of real size: liver-ROI cascade" + (
        " vs whole-volume sliding window" if cfg.whole_volume else "")
    header = report_header(
        title, command, env, [
            f"Volume: generated CT (`cohort.phantom.render_case` on this grid with the plan and random stream of case "
            f"0 of seed {cfg.seed}: group {vol.group}, {'with' if vol.lesions else 'without'} lesions), "
            f"{' × '.join(map(str, vol.shape))} voxels at {' × '.join(f'{s:g}' for s in vol.spacing)} mm "
            f"({extent} mm), int16 HU, `.nii.gz` of {human_bytes(vol.file_bytes)}; rendered and written in "
            f"{vol.render_s:.0f} s (not timed)",
            f"Model: `SLPTNet` in prompt mode, K = {model.num_prompts} prompts batched, window {roi}, overlap "
            f"{OVERLAP}, working spacing {model.spacing[0]:g} mm, stage 1 at {model.coarse_spacing[0]:g} mm, ROI "
            f"margin {model.margin_mm:g} mm; backbone: {model.backbone}",
            f"{request_line}. Median and range over {cfg.repeats} requests after one untimed warm-up request; the file "
            "is in the page cache after the warm-up",
            "Processes: each row in its own new process (forked from a fork server that has only imported torch, "
            "MONAI and the models), one after the other",
            f"Memory: {memory}; it includes Python, torch, MONAI and the model (the RSS before the first request)",
        ], load_note="the cores may be shared with other work",
    )
    return (
        f"{header}\n{format_table(result)}\n\n{format_verdicts(result)}\n\n## Stage 1\n\n{format_stage1(result)}\n\n"
        f"## Checks\n\n{format_checks(result)}\n\n## Where the time goes\n\n{format_phases(result)}\n"
    )


def _describe(backbone_config) -> str:
    d = backbone_config.to_dict()
    if d.get("bundle"):
        source = "nnU-Net model" if d["name"] in ("plainconvunet", "resencunet") else "MONAI bundle"
        return f"{d['name']} from the {source} {Path(d['bundle']).name}"
    return f"{d['name']}, channels {'-'.join(map(str, d['channels']))}"


def _metrics(metrics: dict) -> str:
    val = metrics.get("val_dice") or {}
    parts = [f"held-out liver Dice {val['liver']:.3f}"] if "liver" in val else []
    if "liver" in (metrics.get("val_dice_coarse") or {}):
        parts.append(f"{metrics['val_dice_coarse']['liver']:.3f} at the coarse spacing")
    if "spacing" in metrics:
        parts.append(f"pre-trained at {metrics['spacing'][0]:g} mm")
    return ("; " + ", ".join(parts)) if parts else ""
