"""Whole-volume prediction and per-volume embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbone import build_backbone
from models.cascade import CascadeConfig
from models.embedding import PERCENTILES, embedding_blocks, volume_embedding
from models.inference import pairwise_js_divergence, predict
from models.slpt import SLPTConfig, SLPTNet
from tests.models.conftest import GEOMETRY, ROI, TINY, make_case


#: The embedding of a 20³ 1 mm test volume on a 1 mm coarse grid: the pass sees the volume as it is.
EMBED_GEOMETRY = CascadeConfig(spacing=(1.0, 1.0, 1.0), coarse_spacing=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def open_model() -> SLPTNet:
    """A tiny prompt model whose gates are open, so its prompts disagree."""
    torch.manual_seed(0)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY))
    with torch.no_grad():
        for fpu in model.fpus.values():
            fpu.gate.normal_(0.0, 2.0)
    return model


def test_prediction_shapes_and_dtypes_with_sliding_window(open_model):
    image, _ = make_case(7, size=(24, 20, 16))  # larger than the 16³ ROI along two axes
    prediction = predict(open_model, image)
    assert prediction.mean_prob.shape == (3, 24, 20, 16) and prediction.mean_prob.dtype == np.float32
    assert prediction.label.shape == (24, 20, 16) and prediction.label.dtype == np.uint8
    assert prediction.disagreement.shape == (24, 20, 16) and prediction.disagreement.dtype == np.float32
    assert prediction.foreground_any.shape == (24, 20, 16) and prediction.foreground_any.dtype == bool
    np.testing.assert_allclose(prediction.mean_prob.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(prediction.label, prediction.mean_prob.argmax(axis=0))
    assert (prediction.disagreement >= 0).all() and prediction.disagreement.max() <= np.log(2) + 1e-6
    assert prediction.disagreement.max() > 0


@pytest.mark.parametrize("size, window", [(16, None), ((24, 20, 16), (24, 20, 16))])
def test_prediction_matches_a_direct_forward_pass_when_the_volume_fits(open_model, size, window):
    image, _ = make_case(8, size=size)
    prediction = predict(open_model, image, roi_size=window)
    x = torch.from_numpy(np.clip((image + 200.0) / 450.0, 0, 1)).float()[None, None]
    with torch.no_grad():
        expected = torch.softmax(open_model.eval().forward_all(x), dim=2)[:, 0].mean(dim=0)
    np.testing.assert_allclose(prediction.mean_prob, expected.numpy(), atol=1e-5)


def test_js_divergence_is_zero_for_identical_and_ln2_for_opposite_maps():
    same = torch.tensor([[0.3, 0.7], [0.3, 0.7]])[:, :, None]  # (K=2, C=2, 1 voxel)
    opposite = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[:, :, None]
    assert float(pairwise_js_divergence(same)) == pytest.approx(0.0, abs=1e-6)
    assert float(pairwise_js_divergence(opposite)) == pytest.approx(np.log(2), abs=1e-5)
    assert float(pairwise_js_divergence(same[:1])) == 0.0


def test_embedding_shape_determinism_and_sensitivity_to_acquisition():
    torch.manual_seed(0)
    backbone = build_backbone(TINY)
    image, _ = make_case(3, size=20)
    first = volume_embedding(backbone, image, cfg=EMBED_GEOMETRY)
    second = volume_embedding(backbone, image, cfg=EMBED_GEOMETRY)
    blocks = (2 * sum(TINY.channels), 2 + len(PERCENTILES) + 1, 2 + len(PERCENTILES), 1)
    assert embedding_blocks(backbone) == blocks
    assert first.shape == (sum(blocks),) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert np.isfinite(first).all()
    noisier = volume_embedding(backbone, make_case(3, size=20, noise=60.0)[0], cfg=EMBED_GEOMETRY)
    conv_stats = slice(0, 2 * sum(TINY.channels))
    assert not np.allclose(first[conv_stats], noisier[conv_stats], rtol=1e-3)
    assert noisier[-1] > 2 * first[-1] > 0  # the noise-level block follows the image noise (60 vs 20 HU)
    assert backbone.training  # the caller's mode is left as it was


def test_finetuned_model_predicts_without_disagreement():
    torch.manual_seed(0)
    model = SLPTNet(build_backbone(TINY), SLPTConfig(roi_size=ROI, **GEOMETRY, mode="finetune"))
    prediction = predict(model, make_case(9)[0])
    assert prediction.mean_prob.shape == (3, 16, 16, 16)
    assert not prediction.disagreement.any()
