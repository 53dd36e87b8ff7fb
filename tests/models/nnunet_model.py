"""nnU-Net v2 model folders made locally, with nnU-Net's own code, in the layout ``nnUNetv2_train`` leaves.

:func:`make_nnunet_model` converts some of a cohort's cases into an nnU-Net raw dataset, runs nnU-Net's fingerprint
extraction and an experiment planner and the preprocessing (the default ``ExperimentPlanner`` -> ``PlainConvUNet``, or ``ResEncUNetPlanner``
-> ``ResidualEncoderUNet``; small widths), builds the real ``nnUNetTrainer`` on those plans and lets it write
``checkpoint_final.pth`` with its own ``save_checkpoint`` (random He-initialised weights), beside ``plans.json`` and
``dataset.json`` as the trainer copies them. nnU-Net reads its folders from environment variables at import, so this
runs in a child process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID}_Liver"
#: The planner class per architecture, and the plans name it writes.
PLANNERS = {
    "PlainConvUNet": ("nnunetv2.experiment_planning.experiment_planners.default_experiment_planner.ExperimentPlanner",
                      "nnUNetPlans"),
    "ResidualEncoderUNet": ("nnunetv2.experiment_planning.experiment_planners.resencUNet_planner.ResEncUNetPlanner",
                            "nnUNetResEncUNetPlans"),
}

_SCRIPT = r"""
import json, pydoc, shutil, sys
from pathlib import Path
import torch
from batchgenerators.utilities.file_and_folder_operations import save_json
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

dataset_id, planner_name, plans_name, width, max_width, out = sys.argv[1:]
extract_fingerprints([int(dataset_id)], num_processes=1, check_dataset_integrity=True, clean=True, verbose=False)
# The planners of nnUNetv2_plan_and_preprocess, narrowed: a 3d_fullres U-Net of a few features per stage.
planner = pydoc.locate(planner_name)(int(dataset_id), plans_name=plans_name)
planner.UNet_base_num_features, planner.UNet_max_features_3d = int(width), int(max_width)
planner.plan_experiment()
preprocess([int(dataset_id)], plans_name, configurations=("3d_fullres",), num_processes=(1,))
plans = json.loads((Path(planner.raw_dataset_folder).parent.parent / "preprocessed" / planner.dataset_name
                    / f"{plans_name}.json").read_text())
dataset = json.loads((Path(planner.raw_dataset_folder) / "dataset.json").read_text())
torch.manual_seed(0)
plans["continue_training"] = False  # as nnunetv2.run.run_training hands it over (the trainer pops it)
trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset, device=torch.device("cpu"))
trainer.initialize()
# What on_train_start writes beside the folds, and what the end of training writes into the fold.
save_json(plans, str(Path(trainer.output_folder_base) / "plans.json"), sort_keys=False)
save_json(dataset, str(Path(trainer.output_folder_base) / "dataset.json"), sort_keys=False)
trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
Path(out).write_text(trainer.output_folder_base)
"""


def make_nnunet_model(root: Path, cohort: Path, architecture: str = "PlainConvUNet", cases: int = 6,
                      labels: dict[str, int] | None = None, width: int = 4, max_width: int = 16) -> Path:
    """Plan and "train" an nnU-Net v2 model on ``cases`` of an MSD-layout ``cohort`` under ``root``: -> the result
    folder ``root/results/Dataset501_Liver/nnUNetTrainer__<plans>__3d_fullres`` (plans.json, dataset.json,
    fold_0/checkpoint_final.pth).

    Args:
        architecture: "PlainConvUNet" or "ResidualEncoderUNet" (the planner that plans it).
        labels: dataset.json's labels {name: index} (default background 0, liver 1, tumor 2: the cohort's).
        width, max_width: features of the first stage and the most of any stage.
    """
    raw = root / "raw" / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    names = sorted(p.name.removesuffix(".nii.gz") for p in (cohort / "imagesTr").glob("*.nii.gz"))[:cases]
    for name in names:  # nnU-Net's raw layout: a _0000 channel suffix on images
        shutil.copy(cohort / "imagesTr" / f"{name}.nii.gz", raw / "imagesTr" / f"{name}_0000.nii.gz")
        shutil.copy(cohort / "labelsTr" / f"{name}.nii.gz", raw / "labelsTr" / f"{name}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},  # "CT" makes the planner choose CTNormalization
        "labels": labels or {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": len(names), "file_ending": ".nii.gz",
    }))
    planner, plans_name = PLANNERS[architecture]
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_n_proc_DA": "1"}
    out = root / "result_folder.txt"
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(DATASET_ID), planner, plans_name, str(width), str(max_width), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nnU-Net planning failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Path(out.read_text())
