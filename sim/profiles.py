"""Fixed settings of the label-efficiency study (``slpt simulate``), one frozen dataclass per profile.

Training schedules (steps, learning rates, patch size) are part of the profile, the same for every strategy and every
seed, and are never chosen by looking at the test set (docs/design.md, "Measuring label efficiency honestly"). They
are fixed on a separate development cohort, ``cohort.synth.generate_cohort(..., seed=DEV_COHORT_SEED)``, a seed that
no profile uses for its downstream, upstream or split draws (``python -m experiments.dev_sweep``; what was tried and
found is in ``docs/results/simulation/dev_sweep.md``).

Geometry (docs/design.md, "Geometry and the liver-ROI cascade"): ``size`` is the edge of the generated synthetic
volumes; every volume, synthetic or real, is resampled to the profile's working ``spacing`` and segmented inside the
liver ROI that stage 1 finds at ``coarse_spacing``.

Profiles:
- ``quick``: a demonstration at a coarse 4 mm (96³ volumes, 16³ patches, few steps, 2 seeds), minutes on 2 cores.
- ``lesion``: the study. 280 synthetic volumes at 160³ (2.2–2.9 mm pixels) worked at 2.5 mm, 5 % budget in 2
  rounds, 5 seeds, tesla/random/fg_random/entropy/coreset, and the tesla/random learning curve on to 10 % and 20 % of
  the pool; fine-tuning (an evaluation arm) in the budget round only, a full-data and a compute-matched reference per
  tuning, every model's steps from one rule of its label count (:class:`StepRule`), cosine-annealed. Its backbone is a DynUNet with a full-resolution last stage, pre-trained with the
  denoising term on an upstream cohort whose spleen and kidney lesions are a class of their own (definition below).
  Many hours on 2 cores: it runs across sessions with its records, and the backbone it was made with, kept in git
  (``make study``; docs/design.md, "A study that spans sessions").
- ``smoke``: the smallest meaningful run (24³ volumes at 16 mm, a handful of steps), for tests and CI only.

The earlier studies' profiles (``full``, ``annealed``, ``lean``) are retired; their records stay in
``docs/results/simulation/`` as history.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.backbone import BackboneConfig
from models.pretrain import PretrainConfig
from models.recipes import LESION, BackboneRecipe

#: Seed of the development cohort on which the schedules are to be fixed; no profile draws data from it.
DEV_COHORT_SEED = 7919


@dataclass(frozen=True)
class Schedule:
    """One training schedule: AdamW ``steps`` at learning rate ``lr``."""

    steps: int
    lr: float


@dataclass(frozen=True)
class StepRule:
    """Training steps as a function of the number of labelled volumes, the same rule for every model of a study:
    every strategy, both tunings, every point of the learning curve and the references (docs/design.md, "Measuring
    label efficiency honestly", "One schedule rule")::

        steps(n) = clip(round(base_steps * (n / base_labels) ** power), min_steps, max_steps)

    A fixed step count for every label count would give small label sets the reference's schedule (they overfit
    and cost as much as the reference); a short budget schedule against a long reference confounds labels with
    compute. The rule gives each label count the steps at which it stops gaining on the development cohort.
    """

    base_labels: int
    base_steps: int
    power: float
    min_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        if not 0 < self.min_steps <= self.max_steps or self.base_labels < 1 or self.base_steps < 1 or self.power < 0:
            raise ValueError(f"impossible step rule {self}")

    def steps(self, n_labels: int) -> int:
        """Steps for a model trained on ``n_labels`` labelled volumes (n_labels >= 1)."""
        if n_labels < 1:
            raise ValueError(f"a model needs at least one labelled volume, got {n_labels}")
        scaled = round(self.base_steps * (n_labels / self.base_labels) ** self.power)
        return min(self.max_steps, max(self.min_steps, scaled))


@dataclass(frozen=True)
class SimProfile:
    """Everything fixed about a simulation run (command-line options may override the study design fields).

    Attributes:
        name: profile name.
        size: working edge length; every volume (synthetic or real) is resized to ``size``³ once, and
            inference and embeddings work at that size (spend compute on repeats, not on bigger volumes:
            docs/design.md, "Measuring label efficiency honestly").
        patch: edge of the class-balanced training patches and of the sliding inference window (<= size).
        batch_per_prompt: patches per prompt per training step (fine-tuning: patches per step).
        class_ratios: relative frequency of background, liver and tumour as training patch centres (None: equal).
        prompt_stages: encoder stages that get prompts (None: all; :attr:`models.slpt.SLPTConfig.prompt_stages`).
        fpu_rank, head_reads_stages, head_kernel, head_reads_image: the SLPT network's FPU width, the encoder
            stages its head also reads, its head's kernel and whether it also reads the image
            (:class:`models.slpt.SLPTConfig`).
        cases: downstream synthetic cohort size (``--synthetic`` only).
        test_fraction: share of the cohort held out as the test set (stratified by group and tumour).
        strategies, budget, rounds, seeds, tunings: the default study design.
        curve_strategies, curve_budgets: strategies that go on past ``budget`` to each cumulative fraction of
            ``curve_budgets`` (the learning curve).
        finetune_budget_only: fine-tune (an evaluation arm) only in the budget round, not in the earlier rounds
            or the learning curve's (:meth:`sim.design.Study.trains`).
        lr_decay: learning-rate schedule of every training (:attr:`models.training.TrainConfig.lr_decay`).
        num_prompts: K of prompt tuning.
        steps: the rule ``steps(n_labels)`` of every model (:class:`StepRule`); prompt_lr, finetune_lr: each
            tuning's learning rate (:meth:`schedule`).
        reference_seeds: seeds of the full-data references (at most ``seeds``); they train on the whole
            pool, so only the training seed varies, and the report uses their mean. Each seed also trains a
            compute-matched reference per tuning: the whole pool on the budget's schedule.
        recipe: how ``--synthetic`` runs make their backbone (:class:`models.recipes.BackboneRecipe`: upstream cohort,
            architecture, pre-training at ``spacing`` and ``coarse_spacing``).
        cohort_seed, split_seed: seeds of the downstream cohort and the pool/test split.
        workers: parallel processes (one torch thread each) at most.
    """

    name: str
    size: int
    spacing: tuple[float, float, float]
    coarse_spacing: tuple[float, float, float]
    margin_mm: float
    patch: int
    batch_per_prompt: int
    cases: int
    test_fraction: float
    strategies: tuple[str, ...]
    budget: float
    rounds: int
    seeds: int
    tunings: tuple[str, ...]
    num_prompts: int
    steps: StepRule
    prompt_lr: float
    finetune_lr: float
    reference_seeds: int
    recipe: BackboneRecipe
    curve_strategies: tuple[str, ...] = ()
    curve_budgets: tuple[float, ...] = ()
    cohort_seed: int = 0
    split_seed: int = 2
    workers: int = 2
    class_ratios: tuple[float, ...] | None = None
    fpu_rank: int = 8
    prompt_stages: tuple[int, ...] | None = None
    head_reads_stages: tuple[int, ...] = ()
    head_kernel: int = 1
    head_reads_image: bool = False
    finetune_budget_only: bool = False
    lr_decay: str = "constant"

    def __post_init__(self) -> None:
        # the backbone serves both stages of the cascade: it must be pre-trained at the spacings the study works at
        pretrained = (self.recipe.schedule.spacing, self.recipe.schedule.coarse_spacing)
        if pretrained != (self.spacing, self.coarse_spacing):
            raise ValueError(
                f"profile {self.name!r} works at {self.spacing} / {self.coarse_spacing} mm but its backbone recipe "
                f"pre-trains at {pretrained[0]} / {pretrained[1]} mm"
            )

    def schedule(self, tuning: str, n_labels: int) -> Schedule:
        """The schedule of a ``tuning`` model trained on ``n_labels`` volumes: :attr:`steps` at the tuning's rate."""
        return Schedule(self.steps.steps(n_labels), self.prompt_lr if tuning == "prompt" else self.finetune_lr)


PROFILES: dict[str, SimProfile] = {
    "quick": SimProfile(
        name="quick",
        size=96,
        spacing=(4.0, 4.0, 4.0),
        coarse_spacing=(8.0, 8.0, 8.0),
        margin_mm=16.0,
        patch=16,
        batch_per_prompt=2,
        cases=48,
        test_fraction=1 / 3,
        strategies=("tesla", "random"),
        budget=0.125,
        rounds=2,
        seeds=2,
        tunings=("prompt", "finetune"),
        num_prompts=3,
        steps=StepRule(base_labels=4, base_steps=30, power=0.5, min_steps=30, max_steps=60),
        prompt_lr=3e-2,
        finetune_lr=1e-3,
        reference_seeds=2,
        recipe=BackboneRecipe(
            name="quick", backbone=BackboneConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1),
            epochs=15, upstream_cases=16, upstream_seed=1, upstream_size=96,
            schedule=PretrainConfig(patch_size=(32, 32, 32), spacing=(4.0, 4.0, 4.0), coarse_spacing=(8.0, 8.0, 8.0)),
        ),
    ),
    "smoke": SimProfile(
        name="smoke",
        size=24,
        spacing=(16.0, 16.0, 16.0),
        coarse_spacing=(32.0, 32.0, 32.0),
        margin_mm=16.0,
        patch=16,
        batch_per_prompt=1,
        cases=12,
        test_fraction=0.3,
        strategies=("tesla", "random"),
        budget=0.3,
        rounds=1,
        seeds=1,
        tunings=("prompt", "finetune"),
        num_prompts=2,
        steps=StepRule(base_labels=1, base_steps=2, power=0.5, min_steps=2, max_steps=2),
        prompt_lr=3e-2,
        finetune_lr=1e-3,
        reference_seeds=1,
        recipe=BackboneRecipe(
            name="smoke", backbone=BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0),
            epochs=1, upstream_cases=4, upstream_seed=1, upstream_size=24,
            schedule=PretrainConfig(patch_size=(16, 16, 16), spacing=(16.0, 16.0, 16.0),
                                    coarse_spacing=(32.0, 32.0, 32.0)),
        ),
        workers=1,
    ),
    # The study (issue "A tumour model that sees lesions"): a backbone whose head reads a full-resolution feature and
    # whose upstream task has a lesion class. DynUNet 8-16-32-64-128 with a stride-1 first stage: its last decoder
    # feature (8 channels) is at the working spacing. The upstream cohort labels lesions of the spleen and kidneys as
    # their own class (cohort.synth), and the tumour head starts from that class
    # (models.slpt.SLPTConfig.inherit_classes); the denoising term works at full resolution too. Prompts act on stages
    # 1-4 only: one on the full-resolution stage doubles a prompt step on the CPU, and the head reads the
    # full-resolution decoder feature anyway. 120 pre-training epochs (3,840 steps of 0.5-0.7 s on one core) make the
    # backbone in about 40 minutes. Development-cohort figures: docs/results/simulation/dev_sweep.md, "A
    # full-resolution, lesion-aware backbone".
    "lesion": SimProfile(
        name="lesion",
        size=160,
        spacing=(2.5, 2.5, 2.5),
        coarse_spacing=(5.0, 5.0, 5.0),
        margin_mm=15.0,
        patch=48,
        batch_per_prompt=2,
        cases=280,
        test_fraction=0.26,
        strategies=("tesla", "random", "fg_random", "entropy", "clasp_pe", "coreset"),
        budget=0.05,
        rounds=2,
        seeds=5,
        tunings=("prompt", "finetune"),
        num_prompts=3,
        # Provisional constants from the development cohort's earlier schedules (dev_sweep.md: 10 labels stop
        # gaining near 300 steps, 120 labels still gain from 1,600 to 3,200): roughly 30 steps per label, capped.
        # To be fixed again on the study's backbone from runs at >= 3 label counts before the study runs.
        steps=StepRule(base_labels=10, base_steps=300, power=0.95, min_steps=200, max_steps=3200),
        prompt_lr=2e-2,
        finetune_lr=1e-3,
        reference_seeds=1,
        # the backbone recipe the product ships (models/recipes.py), so the study measures the served model's backbone
        recipe=LESION,
        curve_strategies=("tesla", "random"),
        curve_budgets=(0.10, 0.20),
        prompt_stages=(1, 2, 3, 4),
        finetune_budget_only=True,
        lr_decay="cosine",
    ),
}
