"""Fixed settings of the label-efficiency study (``slpt simulate``), one frozen dataclass per profile.

Training schedules (steps, learning rates, patch size) are part of the profile, the same for every strategy
and every seed, and are never chosen by looking at the test set (docs/design.md,
"Measuring label efficiency honestly"). They are fixed on a separate development cohort:
``cohort.synth.generate_cohort(..., seed=DEV_COHORT_SEED)``, a seed that no profile uses for its downstream,
upstream or split draws (``python -m sim.dev_sweep``; results in ``docs/results/simulation/dev_sweep.md``).

Geometry (docs/design.md, "Geometry and the liver-ROI cascade"): ``size`` is the edge of the generated synthetic
volumes (a 512² scan of 0.7–0.9 mm pixels resampled to ``size`` pixels: 160 gives 2.2–2.9 mm, 240–420 mm of z
coverage over 160 slices); every volume, synthetic or real, is resampled to the profile's working ``spacing``
and segmented inside the liver ROI that stage 1 finds at ``coarse_spacing``. The study's 2.5 mm makes the
smallest lesions (5 mm radius) 2 voxels in radius. An earlier study resized whole volumes to 48³ (6–9 mm voxels)
and no model learned tumours there (docs/results/simulation/README.md).

What the development sweep showed at 2.5 mm inside the liver ROI (45 labelled development volumes, tumour Dice on
15 held-out ones; ``docs/results/simulation/dev_sweep.md``): 32³ patches learned no tumour in 600 steps (prompt
tuning 0.001, fine-tuning 0.005); 48³ patches did (fine-tuning 0.11 / 0.17 / 0.19 after 500 / 1,000 / 1,500 steps,
still rising; prompt tuning with one patch per prompt at 5e-2: 0.11 after 400 steps and 0.09 after 800, at 2e-2:
0.18 and 0.19, and on the profile's 6,016-step backbone 0.23 and 0.24, or 0.25 after 400 steps with 2 patches per
prompt). Hence 48³ patches, 2 per prompt per step, 400 prompt steps at 2e-2 and 600 fine-tuning steps at 1e-3.
The floor (full-data prompt tuning tumour Dice >= 0.5) is not reached. The best figure, 0.351 after 1,600 steps on
120 labelled volumes, came from a backbone pre-trained with the self-supervised denoising term (weight 10; the plain
backbone reached 0.297), so the ``full`` profile pre-trains with it and trains its full-data prompt reference that
long (1,600 steps at 2e-2). That is past the 0.35 below which the issue says not to run the study, on one seed.
Since the study ran, a cosine-annealed learning rate (``TrainConfig.lr_decay``) reached 0.398 after 3,200 steps on
the development cohort (constant rate: 0.373); ``full`` keeps the constant rate so that its complete records stay
valid, and ``annealed`` anneals every schedule (dev_sweep.md, "A learning-rate schedule"). A denoising weight of 30
instead of 10 made a better organ backbone but not a better tumour model (0.379 against 0.361 over two seeds, seeds
disagreeing; dev_sweep.md, "A stronger denoising term"), so the profiles keep 10.

Profiles:
- ``quick``: a demonstration at a coarse 4 mm (96³ volumes, 16³ patches, few steps, 2 seeds), minutes on 2 cores.
- ``full``: the study — 280 synthetic volumes at 160³, 2.5 mm working spacing, 5 % budget in 2 rounds, 5 seeds,
  tesla/random/fg_random/entropy/coreset, and the tesla/random learning curve on to 10 % and 20 % of the pool;
  fine-tuning at the 5 % round only, one full-data reference per tuning. About 97 models: many hours on 2 cores, so
  it runs across sessions with its records in git (``make study``; docs/design.md, "A study that spans sessions").
- ``annealed``: the second study, ``full`` re-cut towards 3 hours on 2 cores with every schedule cosine-annealed (its
  definition below says what it cuts; summed over its records it still costs about 3.6 h on the study's usual CPU).
- ``lean``: the third, ``annealed`` cut further to fit 3 hours (its definition below).
- ``smoke``: the smallest meaningful run (24³ volumes at 16 mm, a handful of steps), for tests and CI only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from models.backbone import BackboneConfig

#: Seed of the development cohort on which the schedules are to be fixed; no profile draws data from it.
DEV_COHORT_SEED = 7919


@dataclass(frozen=True)
class Schedule:
    """One training schedule: AdamW ``steps`` at learning rate ``lr``."""

    steps: int
    lr: float


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
            or the learning curve's (:meth:`sim.simulate.Study.trains`).
        finetune_strategies: fine-tune only on these strategies' labels (empty: every strategy's).
        curve_seeds: the learning curve runs on the first ``curve_seeds`` seeds (None: every seed).
        budget_round_only: strategies recorded from the budget round on (:class:`sim.simulate.Study`): a core-set
            model of an earlier round serves no selection and no target, only a table cell.
        early_rounds_on_curve_seeds: record the rounds before the budget only on the learning curve's seeds; on the
            others their models only select (:class:`sim.simulate.Study`).
        lr_decay: learning-rate schedule of every training (:attr:`models.training.TrainConfig.lr_decay`).
        num_prompts: K of prompt tuning.
        prompt, finetune: schedules of the budget rounds; reference_prompt, reference_finetune: schedules
            of the full-data references.
        reference_seeds: seeds of the full-data references (at most ``seeds``); they train on the whole
            pool, so only the training seed varies, and the report uses their mean.
        upstream_cases, pretrain_epochs, pretrain_patch, pretrain_batch, backbone: the upstream backbone made for
            ``--synthetic`` runs (pre-trained at ``spacing`` and ``coarse_spacing``).
        pretrain_denoise: weight of the self-supervised denoising term of that pre-training
            (:class:`models.pretrain.DenoisingHead`; 0 = the organ task only).
        cohort_seed, upstream_seed, split_seed: seeds of the downstream cohort, the upstream cohort and the
            pool/test split.
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
    prompt: Schedule
    finetune: Schedule
    reference_prompt: Schedule
    reference_finetune: Schedule
    reference_seeds: int
    upstream_cases: int
    pretrain_epochs: int
    pretrain_patch: int
    pretrain_batch: int
    backbone: BackboneConfig
    curve_strategies: tuple[str, ...] = ()
    curve_budgets: tuple[float, ...] = ()
    cohort_seed: int = 0
    upstream_seed: int = 1
    split_seed: int = 2
    workers: int = 2
    class_ratios: tuple[float, ...] | None = None
    fpu_rank: int = 8
    prompt_stages: tuple[int, ...] | None = None
    head_reads_stages: tuple[int, ...] = ()
    head_kernel: int = 1
    head_reads_image: bool = False
    pretrain_denoise: float = 0.0
    finetune_budget_only: bool = False
    finetune_strategies: tuple[str, ...] = ()
    curve_seeds: int | None = None
    lr_decay: str = "constant"
    budget_round_only: tuple[str, ...] = ()
    early_rounds_on_curve_seeds: bool = False


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
        prompt=Schedule(steps=30, lr=3e-2),
        finetune=Schedule(steps=30, lr=1e-3),
        reference_prompt=Schedule(steps=60, lr=3e-2),
        reference_finetune=Schedule(steps=60, lr=1e-3),
        reference_seeds=2,
        upstream_cases=16,
        pretrain_epochs=15,
        pretrain_patch=32,
        pretrain_batch=2,
        backbone=BackboneConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1),
    ),
    "full": SimProfile(
        name="full",
        size=160,
        spacing=(2.5, 2.5, 2.5),
        coarse_spacing=(5.0, 5.0, 5.0),
        margin_mm=15.0,
        patch=48,
        batch_per_prompt=2,
        cases=280,
        test_fraction=0.26,
        strategies=("tesla", "random", "fg_random", "entropy", "coreset"),
        budget=0.05,
        rounds=2,
        seeds=5,
        tunings=("prompt", "finetune"),
        num_prompts=3,
        prompt=Schedule(steps=400, lr=2e-2),
        finetune=Schedule(steps=600, lr=1e-3),
        reference_prompt=Schedule(steps=1600, lr=2e-2),
        reference_finetune=Schedule(steps=1500, lr=1e-3),
        reference_seeds=1,
        upstream_cases=40,
        pretrain_epochs=188,
        pretrain_patch=48,
        pretrain_batch=2,
        backbone=BackboneConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2),
        curve_strategies=("tesla", "random"),
        curve_budgets=(0.10, 0.20),
        pretrain_denoise=10.0,
        finetune_budget_only=True,
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
        prompt=Schedule(steps=2, lr=3e-2),
        finetune=Schedule(steps=2, lr=1e-3),
        reference_prompt=Schedule(steps=2, lr=3e-2),
        reference_finetune=Schedule(steps=2, lr=1e-3),
        reference_seeds=1,
        upstream_cases=4,
        pretrain_epochs=1,
        pretrain_patch=16,
        pretrain_batch=2,
        backbone=BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        workers=1,
    ),
}

#: The second study: the ``full`` design re-cut towards 3 hours on 2 cores, with every schedule cosine-annealed. It keeps
#: ``full``'s cohort, geometry and backbone recipe, so the two share a run folder's cohort and backbone. What it cuts,
#: from ``full``'s measured cost (docs/results/simulation/README.md, "The second study"): fine-tuning on TESLA's labels
#: only (the one comparison a target makes), the learning curve on two seeds, and 300 annealed prompt steps per budget
#: round instead of 400 constant ones (on the development cohort the annealed rate at half the steps was ahead of the
#: constant rate: 0.385 at 1,600 steps against 0.373 at 3,200).
PROFILES["annealed"] = replace(
    PROFILES["full"], name="annealed", lr_decay="cosine", finetune_strategies=("tesla",), curve_seeds=2,
    prompt=Schedule(steps=300, lr=2e-2),
)

#: The third study: ``annealed`` cut to fit 3 hours on 2 cores. ``annealed`` measured about 3.6 h on EPYC family 25
#: model 17 (docs/design.md, "Fitting the budget"); ``lean`` drops what no target reads and shortens the budget rounds:
#: - the learning curve on one seed (a curve seed cost ~46 min there, a plain one ~28);
#: - no rows before the budget round off the curve's seed (``early_rounds_on_curve_seeds``): there the first round's
#:   models only select, and the targets read the budget round;
#: - core-set from the budget round on (``budget_round_only``): it picks by embeddings, so its first-round model fed
#:   nothing but a table cell, on the curve's seed too;
#: - 240 annealed prompt steps per budget round instead of 300 (on the development cohort at 10 labels −0.006 tumour
#:   Dice on the mean of five seeds, four of them lower, inside their spread: docs/results/simulation/dev_sweep.md,
#:   "Shorter budget rounds, and cheaper sliding windows").
#: Its references, cohort, split, geometry and backbone recipe are ``annealed``'s.
PROFILES["lean"] = replace(
    PROFILES["annealed"], name="lean", curve_seeds=1, early_rounds_on_curve_seeds=True, budget_round_only=("coreset",),
    prompt=Schedule(steps=240, lr=2e-2),
)

#: The fourth design (issue "A tumour model that sees lesions"): a backbone whose head reads a full-resolution feature
#: and whose upstream task has a lesion class. DynUNet 8-16-32-64-128 with a stride-1 first stage: its last decoder
#: feature (8 channels) is at the working spacing, where UNet's head read a half-resolution one. The upstream cohort
#: labels lesions of the spleen and kidneys as their own class (cohort.synth), and the tumour head starts from that
#: class (models.slpt.SLPTConfig.inherit_classes); the denoising term now works at full resolution too. Prompts act on
#: stages 1-4 only: one on the full-resolution stage doubles a prompt step on the CPU (2.0 s against 1.0 s, measured on
#: one core), and the head reads the full-resolution decoder feature anyway. Pre-training is cut to 120 epochs (4,800
#: steps of 0.5 s on one core) so the backbone is made in about 40 minutes. Development-cohort figures:
#: docs/results/simulation/dev_sweep.md, "A full-resolution, lesion-aware backbone".
PROFILES["lesion"] = replace(
    PROFILES["full"], name="lesion", lr_decay="cosine",
    backbone=BackboneConfig(name="dynunet", channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2), num_res_units=1),
    prompt_stages=(1, 2, 3, 4), pretrain_epochs=120,
)
