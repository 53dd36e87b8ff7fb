"""``slpt bench scoring``: seconds per volume of TESLA scoring against stock MONAI Label epistemic scoring, in one run.

Three ways to score one unlabeled volume (rows), all in this process, on the same device and torch threads:

- **TESLA, K prompts batched** (ours): exactly the app's path, :func:`models.inference.roi_prompt_probabilities`
  (load, resample to the working spacing, stage 1 finds the liver ROI, the K prompts as ONE batched sliding-window
  pass over it) then :func:`strategies.uncertainty.volume_scores`.
- **K prompts one by one**: the same preprocessing once, then K separate forward passes of batch 1
  (``network(x, prompt_index=tensor([k]))``, through the same sliding-window inferer and settings as
  :func:`models.inference.prompt_probabilities`), then the same scores. Only the batching differs from TESLA.
- **Stock epistemic** (MONAI Label 0.8.5, ``monailabel.tasks.scoring.epistemic_v2.EpistemicScoring.run_scoring``, as
  the sample apps configure it: a copy of the network with ``dropout=0.2`` run in train mode by a ``BasicInferTask``
  with ``train_mode=True, skip_writer=True``, ``simulation_size=5``): each of the 5 MC-dropout passes calls the infer
  task, which reloads the image and re-runs the pre-transforms (LoadImaged, EnsureChannelFirstd,
  ScaleIntensityRanged to the same HU window, Spacingd to the same working spacing, as the sample apps do), slides
  the same window over the whole volume (stock MONAI Label has no liver ROI) and takes the softmax; then the stock
  ``entropy_volume`` over the 5 passes and its ``nanmean``. The loop mirrors ``run_scoring`` without its final
  ``datastore.update_image_info`` (the other rows do not write to a database either). The sample apps' segmentation
  infer tasks also argmax and restore the prediction to the original size after the softmax; leaving that out can only
  make the stock row cheaper.

Model: the default :class:`~models.backbone.BackboneConfig` UNet with random weights (time does not depend on the
values) inside an :class:`~models.slpt.SLPTNet` with the default :class:`~models.slpt.SLPTConfig`; its FPU gates are
set non-zero, as after prompt tuning, so the K prompt maps differ and every score is computed over a real foreground.
The stock network is a MONAI UNet of the same architecture with ``SLPTConfig.num_classes`` outputs and dropout.

Cohort: :func:`cohort.synth.generate_cohort`, ``warmup + volumes`` cases. Every volume is scored by all three methods,
interleaved (the order rotates from volume to volume, so slow spells of the shared machine hit every method alike);
the first ``warmup`` volumes are not timed. The batched and one-by-one paths must give the same scores (checked).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import (
    Activationsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Lambdad,
    ScaleIntensityRanged,
    Spacing,
)
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring
from tqdm import tqdm

from bench import BenchError
from bench.harness import Clock, Environment, markdown_table, measure_environment, report_header
from models.inference import roi_prompt_probabilities, roi_volume
from strategies.uncertainty import volume_scores
from models.backbone import BackboneConfig, build_backbone
from models.cascade import CascadeConfig
from models.device import autocast
from models.errors import ModelError
from models.slpt import SLPTConfig, SLPTNet
from cohort.synth import CohortError, generate_cohort

TESLA_BATCHED = "TESLA, K prompts batched (ours)"
ONE_BY_ONE = "K prompts one by one"
STOCK_EPISTEMIC = "stock epistemic (MC dropout)"
#: Stock MONAI Label defaults: ``epistemic_simulation_size`` 5, ``epistemic_dropout`` 0.2.
STOCK_PASSES = 5
STOCK_DROPOUT = 0.2
#: Target (issue "TESLA"): TESLA scoring costs at most this fraction of stock epistemic scoring.
TARGET_RATIO = 0.5
#: FPU gate value of the benchmark model (an untrained model's gates are 0, which makes all K prompts identical).
GATE = 0.1
#: How far the batched and one-by-one scores may differ (float16 autocast on CUDA rounds differently per batch).
SCORE_TOLERANCE = {"cpu": 1e-4, "cuda": 2e-2}

Scorer = Callable[[str], object]


@dataclass(frozen=True)
class ScoringBenchConfig:
    """What ``slpt bench scoring`` measures.

    Attributes:
        volumes: timed volumes (every method scores each of them).
        size: edge length of the generated cubic volumes, in voxels.
        warmup: untimed volumes scored first by every method.
        roi: edge of the cubic sliding window of every method; None = ``SLPTConfig().roi_size``.
        spacing: working spacing (mm) of every method; stage 1 of ours looks at twice that.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        seed: seeds the cohort and the weights.
    """

    volumes: int = 50
    size: int = 64
    warmup: int = 2
    roi: int | None = None
    spacing: float = 2.5
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class MethodTimes:
    """One row: seconds per timed volume of one scoring method."""

    name: str
    passes: str  # forward passes per volume, in words
    times_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)


@dataclass(frozen=True)
class ScoringBenchResult:
    """All rows of one run; ``methods[-1]`` is stock epistemic, the reference of every ratio.

    Attributes:
        score_gap: largest absolute difference between the batched and one-by-one scores, over all volumes.
        foreground_volumes: volumes whose TESLA scores were computed over a non-empty foreground.
    """

    config: ScoringBenchConfig
    environment: Environment
    roi: tuple[int, int, int]
    num_prompts: int
    methods: list[MethodTimes]
    score_gap: float
    foreground_volumes: int

    @property
    def stock(self) -> MethodTimes:
        return self.methods[-1]

    @property
    def tesla(self) -> MethodTimes:
        return self.methods[0]


class StockEpistemicInfer(BasicInferTask):
    """A stock ``BasicInferTask`` as the sample apps build one for epistemic scoring (train mode, no writer).

    Pre-transforms: load the NIfTI, channel first, clip and scale the HU window to [0, 1], resample to the working
    spacing. Inferer: a sliding window of ``roi`` over the whole volume. Post-transforms: softmax over the class
    channel -> ``pred`` (C, *volume).
    """

    def __init__(
        self, network: torch.nn.Module, roi: Sequence[int], hu_window: tuple[float, float], spacing: Sequence[float]
    ):
        super().__init__(
            path=None, network=network, type=InferType.SEGMENTATION, labels=None, dimension=3,
            description="stock MONAI Label segmentation with MC dropout", load_strict=False, roi_size=tuple(roi),
            train_mode=True, skip_writer=True,
        )
        self.hu_window = hu_window
        self.spacing = tuple(spacing)

    def pre_transforms(self, data=None) -> list[Callable]:
        low, high = self.hu_window
        return [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
            # The array Spacing: Spacingd would also write into every "image_*" key, and the request's image_path is one.
            Lambdad(keys="image", func=Spacing(pixdim=self.spacing, mode="bilinear")),
        ]

    def inferer(self, data=None) -> Inferer:
        return SlidingWindowInferer(roi_size=self.roi_size, sw_batch_size=1, overlap=0.25, mode="gaussian")

    def post_transforms(self, data=None) -> list[Callable]:
        return [EnsureTyped(keys="pred"), Activationsd(keys="pred", softmax=True)]


def stock_network(backbone: BackboneConfig, num_classes: int) -> UNet:
    """The backbone's UNet architecture with ``num_classes`` outputs and MC dropout (stock ``network_with_dropout``)."""
    if backbone.name != "unet":
        raise BenchError(f"the stock epistemic row needs a UNet backbone, got {backbone.name!r}")
    return UNet(
        spatial_dims=3, in_channels=backbone.in_channels, out_channels=num_classes, channels=backbone.channels,
        strides=backbone.strides, num_res_units=backbone.num_res_units, norm=backbone.norm, dropout=STOCK_DROPOUT,
    )


def stock_epistemic_score(scoring: EpistemicScoring, image_path: str, device: str) -> float:
    """Stock ``run_scoring`` of one volume: ``simulation_size`` infer-task calls -> mean voxel entropy (a float)."""
    request = {"image": image_path, "logging": "error", "cache_transforms": False, "device": device}
    passes = []
    for _ in range(scoring.simulation_size):
        _, data = scoring.infer_task(request=request)
        passes.append(data[scoring.infer_task.output_label_key])  # (C, *roi)
    accum = torch.squeeze(torch.stack(passes))  # (passes, C, *roi)
    return float(np.nanmean(scoring.entropy_volume(accum)))


def one_by_one_probs(network: SLPTNet, image_path: str, roi: Sequence[int]) -> np.ndarray:
    """(K, C, *roi) prompt probabilities from K separate batch-1 passes (the inferer of ``prompt_probabilities``).

    ``network`` must be in eval mode (as :func:`benchmark_network` returns it).
    """
    device = next(network.parameters()).device
    crop, intensity = roi_volume(network, image_path)
    x = intensity(crop)[None, None].to(device)  # (1, 1, *ROI)
    maps = []
    with torch.no_grad():
        for k in range(network.num_prompts):
            prompt_index = torch.tensor([k], device=device)

            def one_prompt(windows: torch.Tensor) -> torch.Tensor:
                with autocast(device):
                    logits = network(windows, prompt_index.expand(windows.shape[0]))
                return torch.softmax(logits.float(), dim=1)

            maps.append(sliding_window_inference(
                x, roi_size=tuple(roi), sw_batch_size=1, predictor=one_prompt, overlap=0.25, mode="gaussian",
            ))
    return torch.cat([torch.as_tensor(m) for m in maps]).float().cpu().numpy()


def benchmark_network(seed: int, roi: tuple[int, int, int], spacing: float = 2.5) -> tuple[SLPTNet, BackboneConfig]:
    """The default SLPT network (random weights) with non-zero FPU gates, in eval mode on the CPU."""
    torch.manual_seed(seed)
    backbone_config = BackboneConfig()
    try:
        network = SLPTNet(build_backbone(backbone_config), SLPTConfig(
            roi_size=roi, seed=seed, cascade=CascadeConfig(spacing=(spacing,) * 3, coarse_spacing=(2 * spacing,) * 3)
        ))
    except ModelError as exc:  # e.g. a ROI the backbone cannot take
        raise BenchError(f"--roi {roi[0]}: {exc}") from exc
    with torch.no_grad():
        for fpu in network.fpus.values():
            fpu.gate.fill_(GATE)
    return network.eval(), backbone_config


def run_benchmark(cfg: ScoringBenchConfig) -> ScoringBenchResult:
    """Generate the cohort, then score every volume with all three methods, interleaved; time the non-warm-up ones.

    Raises:
        BenchError: bad arguments, or batched and one-by-one scores that disagree.
    """
    if cfg.volumes < 1 or cfg.warmup < 0:
        raise BenchError(f"--volumes must be at least 1 and --warmup at least 0, got {cfg.volumes}, {cfg.warmup}")
    env = measure_environment(cfg.device)  # before the run adds its own load
    device = env.device
    # Every stock LoadImaged builds a PydicomReader, which warns each time that nvImageCodec is missing (harmless;
    # the check itself still runs and is timed).
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    roi = (cfg.roi,) * 3 if cfg.roi is not None else tuple(SLPTConfig().roi_size)
    network, backbone_config = benchmark_network(cfg.seed, roi, cfg.spacing)
    network.to(device)
    infer_task = StockEpistemicInfer(
        stock_network(backbone_config, network.config.num_classes), roi, network.config.cascade.hu_window,
        network.config.cascade.spacing,
    )
    stock = EpistemicScoring(infer_task, simulation_size=STOCK_PASSES)
    k = network.num_prompts

    scorers: dict[str, Scorer] = {
        TESLA_BATCHED: lambda path: volume_scores(roi_prompt_probabilities(network, path)),
        ONE_BY_ONE: lambda path: volume_scores(one_by_one_probs(network, path, roi)),
        STOCK_EPISTEMIC: lambda path: stock_epistemic_score(stock, path, device),
    }
    passes = {
        TESLA_BATCHED: f"1 (batch of K = {k})",
        ONE_BY_ONE: f"{k} (batch of 1)",
        STOCK_EPISTEMIC: f"{STOCK_PASSES} (batch of 1), each after reloading the image",
    }

    clock = Clock(device)
    times: dict[str, list[float]] = {name: [] for name in scorers}
    score_gap, foreground_volumes = 0.0, 0
    names = list(scorers)
    with tempfile.TemporaryDirectory(prefix="slpt-bench-scoring-") as folder:
        cohort = Path(folder) / "cohort"
        try:
            generate_cohort(cohort, cases=cfg.warmup + cfg.volumes, seed=cfg.seed, size=cfg.size)
        except CohortError as exc:
            raise BenchError(str(exc)) from exc
        images = sorted(str(p) for p in (cohort / "imagesTr").glob("*.nii.gz"))
        for index, image in enumerate(tqdm(images, desc="scoring volumes", unit="volume")):
            order = names[index % len(names):] + names[: index % len(names)]
            results = {}
            for name in order:
                results[name], seconds = clock.time(partial(scorers[name], image))
                if index >= cfg.warmup:
                    times[name].append(seconds)
            batched, single = results[TESLA_BATCHED], results[ONE_BY_ONE]
            score_gap = max(score_gap, *(abs(batched[m] - single[m]) for m in batched))
            foreground_volumes += batched["entropy"] > 0
            if not np.isfinite(results[STOCK_EPISTEMIC]):
                raise BenchError(f"stock epistemic scoring gave {results[STOCK_EPISTEMIC]} for {image}")
    if score_gap > SCORE_TOLERANCE[device]:
        raise BenchError(f"the batched and one-by-one prompt scores differ by {score_gap:.2g}: they must agree")
    return ScoringBenchResult(
        config=cfg, environment=env, roi=roi, num_prompts=k,
        methods=[MethodTimes(name, passes[name], times[name]) for name in names], score_gap=score_gap,
        foreground_volumes=int(foreground_volumes),
    )


def format_table(result: ScoringBenchResult) -> str:
    """Markdown table, one row per method; ratios are to stock epistemic (median to median, mean to mean)."""
    stock = result.stock
    columns = ["method", "forward passes per volume", "s/volume median", "s/volume mean", "range (s)",
               "median ÷ stock", "mean ÷ stock"]
    rows = [
        [m.name, m.passes, f"{m.median_s:.3f}", f"{m.mean_s:.3f}", f"{min(m.times_s):.3f}–{max(m.times_s):.3f}",
         f"{m.median_s / stock.median_s:.2f}", f"{m.mean_s / stock.mean_s:.2f}"]
        for m in result.methods
    ]
    return markdown_table(columns, rows, "llrrrrr")


def format_verdict(result: ScoringBenchResult) -> str:
    tesla, stock, single = result.tesla, result.stock, result.methods[1]
    ratio = tesla.median_s / stock.median_s
    mark = "met" if ratio <= TARGET_RATIO else "MISSED"
    return (
        f"- Target: TESLA ≤ {TARGET_RATIO:.1f}× the stock epistemic cost — {mark}: median {ratio:.2f}×, "
        f"mean {tesla.mean_s / stock.mean_s:.2f}×\n"
        f"- Batching the K prompts: one-by-one ÷ batched = {single.median_s / tesla.median_s:.2f}× (median)"
    )


def format_report(result: ScoringBenchResult, command: str) -> str:
    """The whole markdown report: how it was measured, the table, the verdict."""
    cfg = result.config
    roi = "×".join(str(edge) for edge in result.roi)
    cuda = result.environment.device == "cuda"
    precision = "; ours in float16 autocast, stock in float32 as `BasicInferTask` runs" if cuda else ""
    header = report_header("Scoring one unlabeled volume: TESLA vs stock MONAI Label epistemic", command,
                           result.environment, [
        f"Model: default backbone UNet (random weights; FPU gates {GATE}), K = {result.num_prompts} prompts, working "
        f"resolution {roi} (every method resizes the volume to it){precision}",
        f"Stock epistemic: `EpistemicScoring` (epistemic_v2) as the sample apps set it up: the same UNet with dropout "
        f"{STOCK_DROPOUT} in train mode, {STOCK_PASSES} passes, each a `BasicInferTask` call that reloads and "
        "re-transforms the image; entropy over the passes (`entropy_volume`, `nanmean`)",
        f"Cohort: `cohort.synth.generate_cohort`, {cfg.size}³ voxels, seed {cfg.seed}; {cfg.warmup} untimed warm-up "
        f"volumes, then {cfg.volumes} timed volumes, each scored by all three methods in rotating order, in one process",
        f"Checks: batched and one-by-one scores agree to {result.score_gap:.1g}; {result.foreground_volumes} of "
        f"{cfg.warmup + cfg.volumes} volumes had a non-empty foreground for TESLA",
    ], load_note="the cores are shared with other work, so times are noisy: compare the rows, which ran interleaved, "
                 "rather than absolute seconds")
    return f"{header}\n{format_table(result)}\n\n{format_verdict(result)}\n"
