"""Fixed settings of the label-efficiency study (``slpt simulate``), one frozen dataclass per profile.

Training schedules (steps, learning rates, patch size) are part of the profile, the same for every strategy
and every seed, and are never chosen by looking at the test set (docs/design.md,
"Measuring label efficiency honestly"). They were fixed on a separate
development cohort: ``sim.synth.generate_cohort(..., seed=DEV_COHORT_SEED)``, 60 volumes at 48³, a seed that
no profile uses for its downstream, upstream or split draws (``python -m sim.dev_sweep``; results in
``docs/results/simulation.md``). What the sweep showed, 10 labeled development volumes, tumour Dice on 15
held-out ones:
- With the head over the UNet's 4 logits only, prompt tuning never found a tumour (Dice <= 0.023 even after
  1,000 steps, or 600 steps on all 45 pool volumes): hence the decoder-feature head of :mod:`models.adapters`.
- Whole-volume 48³ training patches put a tumour in ~0.05 % of the voxels; class-balanced 32³ patches
  (a third centred on tumour) train faster per step (0.09 s vs 0.5 s fine-tuning, one thread) and learn more.
  Inference then slides a 32³ window: a whole-volume window on a 32³-trained model lost 0.11 liver Dice.
- Tumours stay hard at 48³: lesions of 5-35 mm radius are 0.6-4 voxels there. Fine-tuning reached held-out
  tumour Dice 0.04 / 0.03 / 0.05 after 800 / 1,200 / 1,600 steps (training-set Dice 0.11-0.16); prompt
  tuning 0.04 after 400 steps and 0.00 after 800. Everything under ~0.05 is noise at this size, so the
  ``full`` schedules are the longest the 2-core budget allows (prompt: 200 steps at 3e-2; fine-tuning: 300
  at 1e-3; prompts need 1e-2 to 5e-2, docs/design.md, "Measuring label efficiency honestly"), and the
  references train 3× longer.

Profiles:
- ``quick``: a demonstration (32³ volumes, 16³ patches, few steps, 2 seeds): 58 s on 2 idle CPU cores, cohort and
  backbone included. Its small backbone tunes 18.8 % of its parameters, and it learns the liver only.
- ``full``: the study — 280 synthetic volumes (pool of ~207, test set of 73 with ~65 tumour cases),
  5 % budget in 2 rounds, 5 seeds, tesla/random/entropy/coreset, 48³ volumes, 32³ patches; 75 min on
  2 CPU cores with one single-threaded process per core.
- ``smoke``: the smallest meaningful run (16³ volumes, a handful of steps), for tests and CI only.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        cases: downstream synthetic cohort size (``--synthetic`` only).
        test_fraction: share of the cohort held out as the test set (stratified by group and tumour).
        strategies, budget, rounds, seeds, tunings: the default study design.
        num_prompts: K of prompt tuning.
        prompt, finetune: schedules of the budget rounds; reference_prompt, reference_finetune: schedules
            of the full-data references.
        reference_seeds: seeds of the full-data references (at most ``seeds``); they train on the whole
            pool, so only the training seed varies, and the report uses their mean.
        upstream_cases, pretrain_epochs, backbone: the upstream backbone made for ``--synthetic`` runs.
        cohort_seed, upstream_seed, split_seed: seeds of the downstream cohort, the upstream cohort and the
            pool/test split.
        workers: parallel processes (one torch thread each) at most.
    """

    name: str
    size: int
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
    backbone: BackboneConfig
    cohort_seed: int = 0
    upstream_seed: int = 1
    split_seed: int = 2
    workers: int = 2


PROFILES: dict[str, SimProfile] = {
    "quick": SimProfile(
        name="quick",
        size=32,
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
        backbone=BackboneConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1),
    ),
    "full": SimProfile(
        name="full",
        size=48,
        patch=32,
        batch_per_prompt=2,
        cases=280,
        test_fraction=0.26,
        strategies=("tesla", "random", "entropy", "coreset"),
        budget=0.05,
        rounds=2,
        seeds=5,
        tunings=("prompt", "finetune"),
        num_prompts=3,
        prompt=Schedule(steps=200, lr=3e-2),
        finetune=Schedule(steps=300, lr=1e-3),
        reference_prompt=Schedule(steps=600, lr=3e-2),
        reference_finetune=Schedule(steps=1000, lr=1e-3),
        reference_seeds=3,
        upstream_cases=40,
        pretrain_epochs=30,
        backbone=BackboneConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2),
    ),
    "smoke": SimProfile(
        name="smoke",
        size=16,
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
        backbone=BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        workers=1,
    ),
}
