"""Upstream pre-training on a tiny MSD-layout cohort."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from models.backbone import BackboneConfig, load_backbone
from models.errors import ModelError
from monai.losses import DiceCELoss

from models.pretrain import PretrainConfig, PretrainLoss, pretrain_backbone
from tests.models.conftest import make_case


def write_msd(root, cases: int) -> None:
    """Tiny organ cohort: class 1 = the bright sphere (tumour voxels included, as upstream labels do)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(cases):
        image, label = make_case(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), np.eye(4)), root / "labelsTr" / f"case_{i}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": training}))


def test_pretraining_writes_a_loadable_backbone_that_segments(tmp_path):
    write_msd(tmp_path / "up", cases=5)
    torch.manual_seed(0)
    calls = []
    metrics = pretrain_backbone(
        tmp_path / "up", tmp_path / "out" / "backbone.pt",
        BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=9),
        epochs=15, progress=lambda step, total, loss: calls.append((step, total)),
        schedule=PretrainConfig(
            patch_size=(16, 16, 16), batch_size=2, lr=1e-2, spacing=(1.0, 1.0, 1.0), coarse_spacing=(2.0, 2.0, 2.0)
        ),
    )
    print(
        f"\ntiny pre-training: {metrics['steps']} steps, {metrics['train_time_s']:.1f} s, "
        f"val Dice {metrics['val_dice']}"
    )
    assert metrics["num_train"] == 4 and metrics["num_val"] == 1
    # One patch per case and grid (working and coarse) per epoch: 15 epochs x 8 / batch 2.
    assert calls[-1] == (metrics["steps"], metrics["steps"]) == (60, 60)
    assert metrics["val_dice"]["liver"] > 0.5
    assert metrics["val_dice_coarse"]["liver"] > 0.5
    # the liver's probability ranks its voxels above the ones around them on the held-out case
    assert metrics["val_auc_near"]["liver"] > 0.8
    assert metrics["spacing"] == [1.0, 1.0, 1.0] and metrics["coarse_spacing"] == [2.0, 2.0, 2.0]
    backbone, cfg = load_backbone(tmp_path / "out" / "backbone.pt")
    assert cfg.out_channels == 2  # taken from dataset.json, not the 9 passed in
    saved = json.loads((tmp_path / "out" / "backbone.json").read_text())
    assert saved["metrics"]["val_dice"] == metrics["val_dice"]


@pytest.mark.parametrize("field", ["class_ratios", "class_weights"])
def test_per_class_settings_are_checked_against_the_cohort_and_recorded(tmp_path, field):
    write_msd(tmp_path / "up", cases=2)
    with pytest.raises(ModelError, match=f"{field} has 3 entries for 2 classes"):
        pretrain_backbone(tmp_path / "up", tmp_path / "b.pt", epochs=1,
                          schedule=PretrainConfig(**{field: (1.0, 1.0, 4.0)}))
    assert not (tmp_path / "b.pt").exists()
    metrics = pretrain_backbone(
        tmp_path / "up", tmp_path / "b.pt", BackboneConfig(channels=(4, 8), strides=(2,), num_res_units=0), epochs=1,
        schedule=PretrainConfig(patch_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0), coarse_spacing=None,
                                dice_background=False, **{field: (1.0, 4.0)}),
    )
    assert metrics[field] == [1.0, 4.0] and metrics["dice_background"] is False


def test_the_pretraining_loss_is_the_recipes_by_default_and_weights_the_rare_class_when_asked():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8)
    labels = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    labels[:, :, 2:6, 2:6, 2:6] = 1
    labels[0, 0, 3, 3, 3] = 2  # one voxel of a rare class
    recipe = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    assert torch.isclose(PretrainLoss()(logits, labels), recipe(logits, labels))
    # Raising the rare class's logit at its voxel lowers the weighted loss more than the unweighted one.
    raised = logits.clone()
    raised[0, 2, 3, 3, 3] += 5.0
    gain = {w: float(PretrainLoss((1.0, 1.0, w))(logits, labels) - PretrainLoss((1.0, 1.0, w))(raised, labels))
            for w in (1.0, 50.0)}
    assert gain[50.0] > 5 * gain[1.0] > 0


def test_bad_cohorts_are_explained(tmp_path):
    with pytest.raises(ModelError, match="no dataset.json"):
        pretrain_backbone(tmp_path, tmp_path / "b.pt", epochs=1)
    write_msd(tmp_path / "up", cases=2)
    (tmp_path / "up" / "imagesTr" / "case_1.nii.gz").unlink()
    with pytest.raises(ModelError, match="1 listed files are missing"):
        pretrain_backbone(tmp_path / "up", tmp_path / "b.pt", epochs=1)


def test_the_denoising_head_learns_the_image_from_the_decoder_feature():
    from models.backbone import build_backbone
    from models.pretrain import DenoisingHead

    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(channels=(8, 16), strides=(2,), num_res_units=1, out_channels=2))
    head = DenoisingHead(backbone)
    with pytest.raises(ModelError, match="forward pass"):
        head.loss(torch.zeros(1, 1, 16, 16, 16))
    image = torch.from_numpy(make_case(0)[0][None, None] / 100.0).float()
    optimizer = torch.optim.Adam(list(backbone.parameters()) + list(head.parameters()), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        backbone(image)
        loss = head.loss(image)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    # Gradients reach the backbone (the point of the term), not only the head's own convolution.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    head.remove()
    backbone(image)
    assert head._feature is None  # the hook is gone once pre-training ends


def test_denoising_pretraining_changes_the_weights_and_saves_a_plain_backbone(tmp_path):
    write_msd(tmp_path / "up", cases=3)
    cfg = BackboneConfig(channels=(8, 16), strides=(2,), num_res_units=1)
    common = dict(patch_size=(16, 16, 16), batch_size=2, lr=1e-2, spacing=(1.0, 1.0, 1.0), coarse_spacing=None)
    weights = {}
    for weight in (0.0, 5.0, 50.0):
        metrics = pretrain_backbone(tmp_path / "up", tmp_path / f"b{weight}.pt", cfg, epochs=2,
                                    schedule=PretrainConfig(**common, denoise_weight=weight))
        assert metrics["denoise_weight"] == weight
        weights[weight] = load_backbone(tmp_path / f"b{weight}.pt")[0].state_dict()
    assert weights[0.0].keys() == weights[5.0].keys() == weights[50.0].keys()  # no auxiliary head in the checkpoint
    # Both runs draw the same input noise, so only the term's weight can make them differ.
    assert any(not torch.equal(weights[5.0][k], weights[50.0][k]) for k in weights[0.0])
