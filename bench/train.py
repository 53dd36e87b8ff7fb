"""``slpt bench train``: one optimisation step of prompt tuning against full fine-tuning, side by side in one run.

Variants (rows): full fine-tuning; prompt tuning with prompts at every encoder stage; prompt tuning with prompts
only in the deeper half of the stages (``(2, 3)`` for the default 4-stage UNet), which lets back-propagation stop
before the shallow, full-resolution stages.

Every variant trains on the SAME input batch: ``num_prompts × batch_per_prompt`` random patches (seeded, so each
variant regenerates identical tensors; a fingerprint of the batch is checked across variants). Prompt tuning gives
patch ``k·batch_per_prompt + j`` to prompt k, as :func:`models.training.train_prompts` does; fine-tuning sees the
same patches as one batch. The network is the default :class:`~models.backbone.BackboneConfig` UNet (random
weights: speed and memory do not depend on the values). A step is :func:`models.training.training_step` with
the optimiser, scaler and loss of :func:`models.training.training_parts`, exactly as in training.

Per variant:
- step time: median (and range) over ``steps`` timed steps after ``warmup`` untimed ones (CUDA synchronised);
- trainable parameters; gradient bytes (``p.grad`` over the parameters) and optimiser-state bytes (every tensor
  in ``optimizer.state``: AdamW's two moments and step counters) after the last step;
- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (model and batch
  already on the device), on CPU the peak RSS of the process. Each variant runs in its own new process, forked
  from a :mod:`multiprocessing` fork server that has only imported torch, MONAI and the models (importing MONAI
  takes tens of seconds on a busy CPU, forking milliseconds), so one variant's peak or heap cannot hide another's;
  "growth" is what the steps added: peak after the steps minus peak (CPU) or allocated (CUDA) memory before them;
- size of a published model version: :func:`models.checkpoint.save_slpt` to a temporary file (prompt tuning
  stores only its tunable tensors, fine-tuning the full state).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from bench import BenchError
from bench.harness import (
    Clock, Environment, cuda_peak_bytes, device_problem, human_bytes, in_forkserver, load_average, markdown_table,
    measure_environment, peak_resident_bytes, report_header, reset_cuda_peak,
)

if TYPE_CHECKING:  # torch is imported only in the measuring processes
    import torch

    from models.backbone import BackboneConfig

FINETUNE = "fine-tuning"
PROMPT_ALL = "prompt tuning, all stages"
PROMPT_DEEP = "prompt tuning, deeper stages"
#: Targets (issue "The SLPT model"; docs/design.md, "Benchmarks and quality bars"), as fractions of fine-tuning.
TARGET_STATE_RATIO = 0.10  # gradient + optimiser-state bytes
TARGET_VERSION_RATIO = 0.10  # published model version
TARGET_TIME_RATIO = 1.0  # step time no worse than fine-tuning
#: What the fork server imports once, so that every measuring process starts with them loaded.
PRELOAD = ["torch", "monai", "models.slpt", "models.training", "models.checkpoint"]

#: What to try when a measuring process dies.
MEMORY_HINT = "try a smaller --size or --batch"


@dataclass(frozen=True)
class BenchConfig:
    """What ``slpt bench train`` measures.

    Attributes:
        size: edge of the cubic training patches (a multiple of the backbone's down-sampling factor, 8).
        batch_per_prompt: patches per prompt; every variant trains on ``num_prompts × batch_per_prompt`` patches.
        num_prompts: K, prompt sets of the prompt-tuning variants.
        steps: timed steps per variant.
        warmup: untimed steps before them (allocator and kernel warm-up).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        seed: seeds the weights and the batch.
        backbone: a backbone to train on (our checkpoint with its JSON, a MONAI bundle folder or an nnU-Net v2 folder); None: the default
            :class:`~models.backbone.BackboneConfig` UNet with random weights.
    """

    size: int = 48
    batch_per_prompt: int = 2
    num_prompts: int = 3
    steps: int = 10
    warmup: int = 2
    device: str = "auto"
    backbone: Path | None = None
    seed: int = 0

    @property
    def patches(self) -> int:
        return self.num_prompts * self.batch_per_prompt


@dataclass(frozen=True)
class VariantSpec:
    """One row: which model to train, and how (sent to the variant's own process)."""

    name: str
    mode: str  # "prompt" | "finetune"
    prompt_stages: tuple[int, ...] | None  # None: every stage (ignored for fine-tuning)
    bench: BenchConfig
    device: str  # resolved: "cpu" or "cuda"


@dataclass(frozen=True)
class VariantResult:
    """What one variant measured. Bytes are exact; times in seconds."""

    name: str
    mode: str
    prompt_stages: list[int]  # stages that got prompts ([] for fine-tuning)
    total_params: int
    trainable_params: int
    step_times_s: list[float]
    gradient_bytes: int
    optimizer_bytes: int
    peak_memory_bytes: int
    memory_growth_bytes: int
    memory_kind: str  # "peak RSS" | "CUDA peak allocated"
    version_bytes: int
    batch_fingerprint: float

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_times_s)

    @property
    def state_bytes(self) -> int:
        """Gradient + optimiser-state bytes."""
        return self.gradient_bytes + self.optimizer_bytes


@dataclass(frozen=True)
class BackboneFacts:
    """The backbone every variant trains, as a measuring process built it.

    Attributes:
        backbone: the default backbone configuration, in words.
        num_stages: its encoder stages (prompt stages are 0..num_stages-1).
    """

    backbone: str
    num_stages: int


@dataclass(frozen=True)
class BenchResult:
    """All rows of one run; ``variants[0]`` is fine-tuning, the reference of every ratio."""

    config: BenchConfig
    environment: Environment
    backbone: BackboneFacts
    variants: list[VariantResult]

    @property
    def finetune(self) -> VariantResult:
        return self.variants[0]


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Sum of ``numel × element size`` over ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors)


def gradient_bytes(parameters: Iterable[torch.nn.Parameter]) -> int:
    """Bytes held by the ``.grad`` of ``parameters`` (parameters without a gradient count 0)."""
    return tensor_bytes(p.grad for p in parameters if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state`` (for AdamW: exp_avg, exp_avg_sq and the step counters)."""
    import torch

    return tensor_bytes(
        value for state in optimizer.state.values() for value in state.values() if isinstance(value, torch.Tensor)
    )


def probe(cfg: BenchConfig, load: float | None) -> tuple[Environment, BackboneFacts]:
    """Resolve the device and check ``cfg`` against the default backbone (run in a measuring process); ``load``: the
    load average at the start.

    Raises:
        BenchError: CUDA asked for but absent, or a patch size the backbone cannot take.
    """
    from models.adapters import adapt_backbone

    env = measure_environment(cfg.device, load=load)
    backbone, backbone_config, _inherit = bench_backbone(cfg)
    adapter = adapt_backbone(backbone)
    if cfg.size < adapter.size_divisor or cfg.size % adapter.size_divisor:
        raise BenchError(f"--size {cfg.size} must be a positive multiple of {adapter.size_divisor} (the backbone's down-sampling)")
    if backbone_config.bundle:  # a bundle's or an nnU-Net model's own files define it, not the other fields
        described = (f"{backbone_config.name} ({type(backbone).__name__}, "
                     f"{sum(p.numel() for p in backbone.parameters()):,} parameters) from {backbone_config.bundle}")
    else:
        described = ", ".join(f"{key} {value}" for key, value in backbone_config.to_dict().items() if value != "")
    return env, BackboneFacts(
        backbone=f"`{cfg.backbone}`: {described}" if cfg.backbone else described, num_stages=len(adapter.stages),
    )


def bench_backbone(cfg: BenchConfig) -> tuple[torch.nn.Module, BackboneConfig, tuple[int, ...]]:
    """(the backbone every variant trains, its config, the upstream classes the head starts from): ``cfg.backbone``
    loaded, or the default UNet with seeded random weights.

    Raises:
        BenchError: a backbone that cannot be loaded.
    """
    import torch

    from models.backbone import BackboneConfig, build_backbone
    from models.bundle import open_backbone
    from models.errors import ModelError

    torch.manual_seed(cfg.seed)
    if cfg.backbone is None:
        config = BackboneConfig()
        return build_backbone(config), config, (0, 1, 4)
    try:
        network, info = open_backbone(cfg.backbone)
        return network, info.config, info.inherit_classes()
    except ModelError as exc:  # CheckpointError is one
        raise BenchError(f"--backbone {cfg.backbone}: {exc}") from exc


def deeper_stages(num_stages: int) -> tuple[int, ...]:
    """The deeper half of the encoder stages, e.g. (2, 3) of 4."""
    return tuple(range(num_stages // 2, num_stages))


def variant_specs(cfg: BenchConfig, device: str, num_stages: int) -> list[VariantSpec]:
    """The rows: fine-tuning first (the reference), then prompts at all stages, then deeper stages only."""
    return [
        VariantSpec(FINETUNE, "finetune", None, cfg, device),
        VariantSpec(PROMPT_ALL, "prompt", None, cfg, device),
        VariantSpec(PROMPT_DEEP, "prompt", deeper_stages(num_stages), cfg, device),
    ]


def synthetic_batch(cfg: BenchConfig, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random patches: images (N, 1, S, S, S) float32 in [0, 1], labels (N, 1, S, S, S) long; N = cfg.patches."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.patches, 1, cfg.size, cfg.size, cfg.size)
    return torch.rand(shape, generator=generator), torch.randint(0, num_classes, shape, generator=generator)


def measure_variant(spec: VariantSpec) -> VariantResult:
    """Build the variant's model, train it ``warmup + steps`` steps on the benchmark batch, and measure it.

    Meant to run in a new process (see :func:`run_benchmark`): on CPU its peak RSS is the variant's own.
    """
    import torch

    from models.checkpoint import save_slpt
    from models.slpt import SLPTConfig, SLPTNet
    from models.training import TrainConfig, training_parts, training_step

    cfg, device = spec.bench, torch.device(spec.device)
    backbone, backbone_config, inherit = bench_backbone(cfg)
    torch.manual_seed(cfg.seed)
    model = SLPTNet(
        backbone,
        SLPTConfig(
            mode=spec.mode, num_prompts=cfg.num_prompts, prompt_stages=spec.prompt_stages,
            roi_size=(cfg.size,) * 3, seed=cfg.seed, inherit_classes=inherit,
        ),
    )
    images, labels = synthetic_batch(cfg, model.config.num_classes)
    fingerprint = float(images.double().sum() + labels.double().sum())
    model.to(device).train()
    images, labels = images.to(device), labels.to(device)
    # Patch k·batch_per_prompt + j goes to prompt k (fine-tuning ignores the index).
    prompt_index = torch.arange(cfg.num_prompts, device=device).repeat_interleave(cfg.batch_per_prompt)
    optimizer, scaler, loss_fn = training_parts(model, TrainConfig(), device)

    def step() -> None:
        training_step(model, optimizer, scaler, loss_fn, images, labels, prompt_index)

    memory_before = _memory_baseline(device)
    clock = Clock(device)
    with tqdm(total=cfg.warmup + cfg.steps, desc=spec.name, unit="step", leave=False) as bar:
        for _ in range(cfg.warmup):
            step()
            bar.update(1)
        times = []
        for _ in range(cfg.steps):
            times.append(clock.time(step)[1])
            bar.update(1)
    peak = _memory_peak(device)
    optimizer_bytes = optimizer_state_bytes(optimizer)
    if optimizer_bytes == 0:  # AdamW creates its state at the first step it takes
        raise BenchError(
            f"{spec.name}: the optimiser never stepped (the float16 gradient scaler skipped every step); "
            "use more --warmup steps"
        )

    with tempfile.TemporaryDirectory() as folder:
        version_bytes = save_slpt(model, Path(folder) / "version.pt", backbone_config).stat().st_size
    counts = model.parameter_counts()
    return VariantResult(
        name=spec.name,
        mode=spec.mode,
        prompt_stages=list(model.prompt_stages),
        total_params=int(counts["total_params"]),
        trainable_params=int(counts["tunable_params"]),
        step_times_s=times,
        gradient_bytes=gradient_bytes(model.parameters()),
        optimizer_bytes=optimizer_bytes,
        peak_memory_bytes=peak,
        memory_growth_bytes=peak - memory_before,
        memory_kind="CUDA peak allocated" if device.type == "cuda" else "peak RSS",
        version_bytes=version_bytes,
        batch_fingerprint=fingerprint,
    )


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Measure every variant on the same batch, one after the other, each in its own new process.

    Raises:
        BenchError: bad arguments, or a measuring process that died (e.g. killed for memory).
    """
    _check_config(cfg)
    load = load_average()  # before the fork server adds its own
    env, backbone = in_forkserver(probe, cfg, load, preload=PRELOAD, what="checking the device and backbone",
                                  hint=MEMORY_HINT)
    variants = [
        in_forkserver(measure_variant, spec, preload=PRELOAD, what=spec.name, hint=MEMORY_HINT)
        for spec in tqdm(variant_specs(cfg, env.device, backbone.num_stages), desc="variants", unit="variant")
    ]
    if len({v.batch_fingerprint for v in variants}) != 1:
        raise BenchError("the variants did not train on the same batch (fingerprints differ)")
    return BenchResult(config=cfg, environment=env, backbone=backbone, variants=variants)


def format_table(result: BenchResult) -> str:
    """Markdown table, one row per variant; every figure with its ratio to fine-tuning in parentheses."""
    ref = result.finetune
    columns = ["variant", "prompt stages", "trainable params", "step time: median (ratio), range",
               "gradients + optimizer state", ref.memory_kind, "memory growth during steps", "published version"]
    rows = [
        [
            v.name, ", ".join(map(str, v.prompt_stages)) or "— (all weights)",
            f"{v.trainable_params:,} ({_ratio(v.trainable_params, ref.trainable_params)})",
            f"{v.median_step_s:.2f} s ({_ratio(v.median_step_s, ref.median_step_s)}), "
            f"{min(v.step_times_s):.2f}–{max(v.step_times_s):.2f} s",
            f"{human_bytes(v.state_bytes)} ({_ratio(v.state_bytes, ref.state_bytes)})",
            f"{human_bytes(v.peak_memory_bytes)} ({_ratio(v.peak_memory_bytes, ref.peak_memory_bytes)})",
            f"{human_bytes(v.memory_growth_bytes)} ({_ratio(v.memory_growth_bytes, ref.memory_growth_bytes)})",
            f"{human_bytes(v.version_bytes)} ({_ratio(v.version_bytes, ref.version_bytes)})",
        ]
        for v in result.variants
    ]
    return markdown_table(columns, rows, "llrrrrrr")


def format_verdicts(result: BenchResult) -> str:
    """One line per prompt-tuning variant and target: the measured ratio and whether it meets the target."""
    ref = result.finetune
    lines = []
    for v in result.variants[1:]:
        checks = [
            ("gradients + optimizer state", v.state_bytes / ref.state_bytes, TARGET_STATE_RATIO),
            ("published version", v.version_bytes / ref.version_bytes, TARGET_VERSION_RATIO),
            ("median step time", v.median_step_s / ref.median_step_s, TARGET_TIME_RATIO),
        ]
        for what, ratio, target in checks:
            mark = "met" if ratio <= target else "MISSED"
            lines.append(f"- {v.name}: {what} {ratio:.1%} of fine-tuning (target ≤ {target:.0%}): {mark}")
    return "\n".join(lines)


def format_report(result: BenchResult, command: str) -> str:
    """The whole markdown report: how it was measured, the table, the verdicts."""
    cfg, env, backbone = result.config, result.environment, result.backbone
    if env.device == "cuda":
        memory_note = (
            "`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (model and batch already on the GPU); "
            "growth = that peak minus the memory allocated before the first step"
        )
    else:
        memory_note = (
            "peak resident set size (`VmHWM`) of the variant's own process, so it includes Python, torch and "
            "MONAI themselves (loaded before the fork); growth = peak RSS after the steps minus peak RSS before the "
            "first step (activations, gradients and optimizer state)"
        )
    header = report_header("Training step: prompt tuning vs full fine-tuning", command, env, [
        f"Model: {'backbone' if cfg.backbone else 'default backbone'} ({backbone.backbone}; "
        f"{'' if cfg.backbone else 'random weights, '}{backbone.num_stages} encoder stages), "
        f"K = {cfg.num_prompts} prompt sets, one optimisation step = `models.training.training_step` (AdamW, Dice + CE"
        f"{', float16 autocast' if env.device == 'cuda' else ''})",
        f"Batch: the same {cfg.patches} random patches of {cfg.size}³ voxels for every variant (prompt tuning: "
        f"{cfg.num_prompts} prompts × {cfg.batch_per_prompt} patches each; fine-tuning: all {cfg.patches} as one "
        f"batch), seed {cfg.seed}",
        f"Timing: median over {cfg.steps} steps after {cfg.warmup} untimed warm-up steps; each variant runs in its own "
        "new process, one after the other",
        f"Memory: {memory_note}",
        "Published version: file size of `models.checkpoint.save_slpt` (prompt tuning stores prompts, FPUs and head "
        "only; fine-tuning stores the full state)",
    ], load_note="the cores are shared with other work, so step times are noisy")
    return f"{header}\nRatios in parentheses are relative to fine-tuning.\n\n{format_table(result)}\n\n{format_verdicts(result)}\n"


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.1%}" if reference else "n/a"


def _check_config(cfg: BenchConfig) -> None:
    problems = [
        f"--{name} must be at least {least}, got {value}"
        for name, value, least in (
            ("batch", cfg.batch_per_prompt, 1), ("prompts", cfg.num_prompts, 1), ("steps", cfg.steps, 1),
            ("warmup", cfg.warmup, 0),
        )
        if value < least
    ]
    if problem := device_problem(cfg.device):
        problems.append(problem)
    if cfg.backbone is not None and not Path(cfg.backbone).exists():
        problems.append(f"--backbone {cfg.backbone} does not exist")
    if problems:
        raise BenchError("; ".join(problems))


def _memory_baseline(device: torch.device) -> int:
    """Start a variant's memory measurement; returns the baseline that "growth" is relative to."""
    return reset_cuda_peak(device) if device.type == "cuda" else peak_resident_bytes()


def _memory_peak(device: torch.device) -> int:
    return cuda_peak_bytes(device) if device.type == "cuda" else peak_resident_bytes()
