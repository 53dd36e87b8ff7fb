"""The per-volume intensity of a MONAI bundle (wholeBody_ct_segmentation's NormalizeIntensityd(nonzero=True) +
ScaleIntensityd(-1, 1)): crops of a volume, for inference and for training, are normalised with the statistics of
the whole resampled volume, exactly as the bundle's own preprocessing normalises that volume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from models.bundle import intensity_transforms, read_bundle
from models.cascade import CascadeConfig, coarse_pass, to_working
from models.errors import ModelError
from models.geometry import Box, Intensity, to_spacing
from models.inference import predict, roi_volume, segment_volume
from models.slpt import SLPTConfig, SLPTNet
from models.training import load_cases, prepare_cases
from tests.models.test_bundle_backbone import whole_body_like

SHAPE = (40, 36, 24)
#: Stored left-right and front-back flipped, with anisotropic voxels: the bundle reorients and resamples first.
AFFINE = np.array([[-1.2, 0, 0, 30.0], [0, -1.0, 0, 20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
SPACING = (1.5, 1.5, 1.5)
#: The same scene stored at the working spacing (flipped too): resampling leaves its voxels as they are.
ISO_AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 1.5, -10.0], [0, 0, 0, 1]])
LIVER_CENTRE, LIVER_R2 = (12, 14, 12), 60


def _grid() -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))


def write_scan(path: Path, affine: np.ndarray, corners: bool = False) -> Path:
    """A CT in integer HU: air, soft tissue (some voxels exactly 0), a liver, bone, and a block of exact-zero water
    (NormalizeIntensityd(nonzero=True) leaves zeros at 0). ``corners``: the volume's highest value (metal, 3000 HU)
    and lowest (-3024, outside the field of view) in two opposite corner voxels, so that every box short of the whole
    volume misses one of them and has another range than the volume."""
    g, rng = _grid(), np.random.default_rng(0)
    body = ((g[0] - 20) / 17) ** 2 + ((g[1] - 18) / 15) ** 2 < 1
    liver = sum((g[i] - c) ** 2 for i, c in enumerate(LIVER_CENTRE)) < LIVER_R2
    image = np.full(SHAPE, -1024.0)
    image[body] = 20.0 + rng.normal(0, 8, SHAPE)[body]
    image[body & liver] = 110.0 + rng.normal(0, 8, SHAPE)[body & liver]
    image[body & (g[0] > 28) & (g[1] < 12)] = 0.0
    image[body & ((g[0] - 20) ** 2 + (g[1] - 26) ** 2 < 6)] = 700.0  # bone, away from the liver
    if corners:
        image[0, 0, 0], image[-1, -1, -1] = 3000.0, -3024.0
    nib.save(nib.Nifti1Image(np.rint(image).astype(np.int16), affine), path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(a wholeBody-like bundle, an anisotropic flipped CT, the same scene at the working spacing with extremes in
    its corners, the latter's liver label)."""
    folder = tmp_path_factory.mktemp("volume_intensity")
    liver = sum((g - c) ** 2 for g, c in zip(_grid(), LIVER_CENTRE)) < LIVER_R2
    nib.save(nib.Nifti1Image(liver.astype(np.uint8), ISO_AFFINE), folder / "liver.nii.gz")
    return (whole_body_like(folder / "wholeBody_ct_segmentation"), write_scan(folder / "ct.nii.gz", AFFINE),
            write_scan(folder / "ct_iso.nii.gz", ISO_AFFINE, corners=True), folder / "liver.nii.gz")


def bundle_preprocessing(bundle: Path, image: Path) -> torch.Tensor:
    """What the bundle itself feeds its network: its configs/inference.json preprocessing, run by MONAI, on the
    whole image (pixdim set to this test's spacing) -> (1, X, Y, Z)."""
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"], parser["pixdim"] = str(bundle), list(SPACING)
    return parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]


def cascade_of(bundle: Path, **changes) -> CascadeConfig:
    _, info = read_bundle(bundle)
    return CascadeConfig(spacing=SPACING, coarse_spacing=(3.0, 3.0, 3.0), liver_class=info.liver_class(),
                         **CascadeConfig.intensity_fields(info.intensity()), **changes)


def test_crops_are_normalised_as_the_bundle_normalises_the_whole_volume(scan):
    bundle, image, _iso, _label = scan
    reference = bundle_preprocessing(bundle, image)
    cfg = cascade_of(bundle)
    _original, working = to_working(image, cfg)
    assert working.shape == reference.shape and torch.allclose(working.affine, reference.affine.double())
    assert (working == 0).any()  # the nonzero rule is exercised
    bound = cfg.intensity.for_volume(working)
    for box in (Box.whole(working.shape), Box((2, 3, 1), (20, 17, 14)), Box((10, 0, 12), (31, 9, 30))):
        crop = working[0][box.slices()]
        torch.testing.assert_close(bound(crop), reference[0][box.slices()].as_tensor(), atol=1e-5, rtol=0)
    # the crop's own statistics would give other numbers (so the check above would catch their use) ...
    crop = working[0][Box((2, 3, 1), (20, 17, 14)).slices()]
    assert (cfg.intensity.for_volume(crop)(crop) - reference[0][2:20, 3:17, 1:14]).abs().max() > 0.05
    # ... and an unbound per-volume intensity refuses a crop instead of guessing
    with pytest.raises(ModelError, match=r"whole volume's statistics: bind them with Intensity.for_volume"):
        cfg.intensity(crop)


def test_training_and_inference_crops_carry_their_volumes_statistics(scan):
    bundle, _anisotropic, image, label = scan
    network, info = read_bundle(bundle)
    cfg = cascade_of(bundle, margin_mm=3.0, min_liver_ml=0.0)
    model = SLPTNet(network, SLPTConfig(inherit_classes=info.inherit_classes(), cascade=cfg, roi_size=(32, 32, 32)))
    prepared = prepare_cases(model, [(str(image), str(label))])
    (hu, _label, bound), = prepared
    ((normalised, _),) = load_cases(prepared, model.config.num_classes, cfg.intensity)
    reference = bundle_preprocessing(bundle, image)[0].numpy()
    _original, working = to_working(image, cfg)
    whole = working[0].numpy()
    assert hu.shape != whole.shape  # a crop, whose own statistics differ from the volume's
    where = next(tuple(slice(o, o + s) for o, s in zip(offset, hu.shape))
                 for offset in np.ndindex(*(w - s + 1 for w, s in zip(whole.shape, hu.shape)))
                 if np.array_equal(whole[tuple(slice(o, o + s) for o, s in zip(offset, hu.shape))], hu))
    np.testing.assert_allclose(normalised[0], reference[where], atol=1e-5, rtol=0)
    own = cfg.intensity.for_volume(hu)(hu).numpy()
    assert np.abs(own - reference[where]).max() > 1e-3
    assert bound == cfg.intensity.for_volume(working)
    # stage 2 segments the ROI crop with the same whole-volume statistics, never the crop's: the window that the
    # model sees (one: roi_size covers the crop) holds the crop normalised as the bundle normalises the volume
    model.eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda _module, args: seen.append(args[0][0, 0].detach().clone()))
    try:
        result = segment_volume(model, image)
    finally:
        hook.remove()
    roi_box = result.roi.box
    roi = roi_box.crop(working)[0].as_tensor()
    assert roi.shape != whole.shape
    expected = torch.from_numpy(reference[roi_box.slices()])
    assert (cfg.intensity.for_volume(roi)(roi) - expected).abs().max() > 1e-3
    (window,) = seen
    assert any(torch.allclose(window[tuple(slice(o, o + s) for o, s in zip(offset, roi.shape))], expected, atol=1e-5,
                              rtol=0)
               for offset in np.ndindex(*(w - s + 1 for w, s in zip(window.shape, roi.shape))))
    scored, scored_with = roi_volume(model, image)
    assert torch.equal(scored, roi) and scored_with == bound
    with pytest.raises(ModelError, match="for_volume"):
        predict(model, roi)
    # cases given as bare arrays cannot be normalised per volume: the error names the case
    with pytest.raises(ModelError, match="case 0: the volume intensity scheme"):
        load_cases([(hu, _label)], model.config.num_classes, cfg.intensity)


def test_stage1_at_the_coarse_spacing_uses_the_working_volumes_statistics(scan):
    """Stage 1 runs on a coarser copy of the working volume; it normalises that copy with the working volume's
    statistics (the bundle's own spacing), so it sees the bundle's normalised image, resampled, not a copy rescaled
    to its own smoothed range."""
    bundle, image, _iso, _label = scan
    network, _info = read_bundle(bundle)
    cfg = cascade_of(bundle)
    _original, working = to_working(image, cfg)
    coarse = to_spacing(working, cfg.coarse_spacing)[0].as_tensor()
    inputs = []
    hook = network.register_forward_pre_hook(lambda _module, args: inputs.append(args[0].detach().clone()))
    try:
        coarse_pass(network, working, cfg)
    finally:
        hook.remove()
    (window,) = inputs  # one window: the coarse volume padded to the network's size divisor
    expected, own = cfg.intensity.for_volume(working)(coarse), cfg.intensity.for_volume(coarse)(coarse)
    assert (own - expected).abs().max() > 1e-3
    found = [offset for offset in np.ndindex(*(w - s + 1 for w, s in zip(window.shape[2:], coarse.shape)))
             if torch.allclose(window[0, 0][tuple(slice(o, o + s) for o, s in zip(offset, coarse.shape))], expected,
                               atol=1e-5, rtol=0)]
    assert found, "stage 1's input is not the coarse volume normalised with the working volume's statistics"


def test_fixed_schemes_are_their_own_binding():
    """A window or a fixed z-score has nothing to bind: every crop maps HU the same way, bound or not."""
    volume = torch.randn(8, 8, 8) * 100
    zscore = dataclasses.replace(CascadeConfig(), normalization="zscore", norm_mean=50.0, norm_std=20.0)
    for intensity in (CascadeConfig().intensity, zscore.intensity):
        assert intensity.for_volume(volume) is intensity
        torch.testing.assert_close(intensity(volume[:4]), intensity.for_volume(volume)(volume)[:4])


@pytest.mark.parametrize("intensity", [
    Intensity((-150.0, 250.0)),
    Intensity((-980.0, 310.0), "zscore", mean=90.0, std=60.0),
    Intensity(None, "volume", nonzero=True, rescale=(-1.0, 1.0)),
    Intensity(None, "volume", nonzero=False),
], ids=["window", "zscore", "wholeBody", "zscore_only"])
def test_an_exported_bundle_writes_transforms_that_monai_runs_as_we_normalise(intensity: Intensity):
    """export-bundle writes the backbone's intensity as MONAI transforms (intensity_transforms); run by MONAI on a
    volume they give what the cascade feeds the network."""
    volume = torch.from_numpy(np.random.default_rng(1).normal(0, 400, (1, 12, 10, 8)).round().astype(np.float32))
    volume[0, :3] = 0.0
    parser = ConfigParser({"image_key": "image", "preprocessing": {
        "_target_": "Compose", "transforms": intensity_transforms(intensity)}})
    theirs = parser.get_parsed_content("preprocessing")({"image": volume.clone()})["image"]
    torch.testing.assert_close(torch.as_tensor(theirs)[0], intensity.for_volume(volume)(volume[0]), atol=1e-5, rtol=0)
