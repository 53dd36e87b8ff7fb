"""Prompt tuning and fine-tuning on tiny generated volumes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from models.backbone import build_backbone
from models.errors import ModelError
from models.slpt import SLPTConfig, SLPTNet
from models.training import TrainConfig, TrainResult, measure_prompt_disagreement, train_prompts
from tests.models.conftest import GEOMETRY, ROI, TINY, make_case


@pytest.fixture(scope="module")
def held_out() -> list[np.ndarray]:
    return [make_case(100 + seed)[0] for seed in range(2)]


@pytest.fixture(scope="module")
def trained(tiny_cases, held_out) -> tuple[SLPTNet, dict[str, torch.Tensor], TrainResult, float]:
    """A prompt model trained 40 steps, the backbone state before training, and the untrained disagreement."""
    torch.manual_seed(0)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    untrained_disagreement = measure_prompt_disagreement(model, held_out)
    result = train_prompts(model, tiny_cases, TrainConfig(steps=40, seed=1))
    return model, backbone_before, result, untrained_disagreement


def test_prompt_tuning_lowers_the_training_loss(trained):
    _, _, result, _ = trained
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    print(f"\nprompt tuning loss: first 5 steps {first:.3f} -> last 5 steps {last:.3f} in {result.time_s:.1f} s")
    assert result.steps == len(result.losses) == 40
    assert last < 0.8 * first


def test_frozen_backbone_gets_no_gradient_and_does_not_change(trained):
    model, before, _, _ = trained
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.tunable_parameters())
    assert all(float(fpu.gate.detach().abs().max()) > 0 for fpu in model.fpus.values())


def test_a_network_trained_on_the_cpu_keeps_its_convolutions_channels_last(trained):
    """oneDNN's fast layout for 3D convolutions (models.device.cpu_fast_layout); the values stay what they were."""
    model = trained[0]
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convolutions
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convolutions)


def test_each_prompt_has_its_family_and_bootstrap(trained, tiny_cases):
    _, _, result, _ = trained
    assert result.families == [["intensity"], ["spatial"], ["noise"]]
    assert all(len(ix) == len(tiny_cases) for ix in result.case_indices)
    assert len({tuple(ix) for ix in result.case_indices}) == 3  # three different resamples


def test_trained_prompts_disagree_on_held_out_volumes(trained, held_out):
    model, _, _, untrained = trained
    disagreement = measure_prompt_disagreement(model, held_out)
    print(f"\nmean pairwise JS disagreement on held-out volumes: untrained {untrained:.5f}, trained {disagreement:.5f}")
    assert untrained == 0.0  # zero gates: all prompts give the backbone's prediction
    assert disagreement > 1e-4


def test_finetune_mode_trains_the_whole_backbone_from_nifti_paths(tmp_path, tiny_cases):
    paths = []
    for i, (image, label) in enumerate(tiny_cases[:3]):
        image_path, label_path = tmp_path / f"img{i}.nii.gz", tmp_path / f"lab{i}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), image_path)
        nib.save(nib.Nifti1Image(label, np.eye(4)), label_path)
        paths.append((image_path, label_path))
    torch.manual_seed(0)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY, mode="finetune"))
    before = [p.clone() for p in model.backbone.parameters()]
    result = train_prompts(model, paths, TrainConfig(steps=3))
    # the prompt arm's patches and augmentation: K groups, one family each, every case in each (no bagging)
    assert result.families == [["intensity"], ["spatial"], ["noise"]]
    assert result.case_indices == [[0, 1, 2]] * 3
    assert any(not torch.equal(b, p) for b, p in zip(before, model.backbone.parameters()))


def test_bad_training_data_is_explained(tiny_cases):
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))
    image, label = tiny_cases[0]
    with pytest.raises(ModelError, match="need 3D image and label of one shape"):
        train_prompts(model, [(image, label[:8])], TrainConfig(steps=1))
    with pytest.raises(ModelError, match=r"label values \[0, 1, 2, 7\] outside 0..2"):
        bad = label.copy()
        bad[0, 0, 0] = 7
        train_prompts(model, [(image, bad)], TrainConfig(steps=1))
    with pytest.raises(ModelError, match="no labelled cases"):
        train_prompts(model, [], TrainConfig(steps=1))
    with pytest.raises(ModelError, match="volume not found"):
        train_prompts(model, [("/nonexistent.nii.gz", label)], TrainConfig(steps=1))


def test_class_ratios_choose_the_patch_centres():
    """Ratios (0, 0, 1) centre every patch on tumour; equal ratios also centre some on background."""
    from models.augment import make_sampler

    label = np.zeros((1, 32, 32, 32), dtype=np.int64)
    label[0, 8:24, 8:24, 8:24] = 1
    label[0, 20:22, 20:22, 20:22] = 2
    image = label.astype(np.float32)

    def centre_classes(ratios) -> set[int]:
        sample = make_sampler((8, 8, 8), 3, [], seed=0, class_ratios=ratios)
        return {int(sample(image, label)[1][0, 4, 4, 4]) for _ in range(30)}

    assert centre_classes((0.0, 0.0, 1.0)) == {2}
    assert 0 in centre_classes(None)


def test_cosine_decay_anneals_the_learning_rate_and_constant_keeps_it():
    from models.training import learning_rate_decay

    def rates(decay: str) -> list[float]:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-2)
        schedule = learning_rate_decay(optimizer, TrainConfig(steps=10, lr=2e-2, lr_decay=decay))
        seen = []
        for _ in range(10):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen + [optimizer.param_groups[0]["lr"]]

    assert rates("constant") == [2e-2] * 11
    cosine = rates("cosine")
    assert cosine[0] == 2e-2 and cosine[5] == pytest.approx(1e-2) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    with pytest.raises(ModelError, match="unknown lr_decay 'linear'"):
        TrainConfig(lr_decay="linear")


def test_training_follows_its_learning_rate_decay(tiny_cases):
    """Same seed, same first step; the annealed run's later updates are smaller, so the two networks part."""

    def train(decay: str) -> tuple[SLPTNet, TrainResult]:
        torch.manual_seed(0)
        model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))
        return model, train_prompts(model, tiny_cases, TrainConfig(steps=6, seed=1, lr_decay=decay))

    constant, constant_result = train("constant")
    cosine, cosine_result = train("cosine")
    assert constant_result.losses[0] == cosine_result.losses[0]
    differ = [not torch.equal(a, b) for a, b in zip(constant.tunable_parameters(), cosine.tunable_parameters())]
    assert any(differ)


@pytest.mark.parametrize("mode", ["prompt", "finetune"])
def test_both_arms_train_on_k_times_batch_patches_per_step(tiny_cases, monkeypatch, mode):
    """Fine-tuning gets as many patches per step as prompt tuning (K × batch_per_prompt), not batch_per_prompt."""
    import models.training as training

    sizes = []
    real_step = training.training_step

    def counting_step(model, optimizer, scaler, loss_fn, images, labels, prompt_index, extra_loss=None):
        sizes.append(images.shape[0])
        return real_step(model, optimizer, scaler, loss_fn, images, labels, prompt_index, extra_loss)

    monkeypatch.setattr(training, "training_step", counting_step)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY, mode=mode, num_prompts=3))
    train_prompts(model, tiny_cases[:3], TrainConfig(steps=2, batch_per_prompt=2))
    assert sizes == [6, 6]
