"""Our backbone exported as a MONAI bundle: MONAI alone loads it, and its run segments a NIfTI onto the image's grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from models.backbone import BackboneConfig, build_backbone, load_backbone, save_backbone
from models.bundle import export_bundle, export_model_bundle
from models.cascade import CascadeConfig
from models.checkpoint import load_slpt, save_slpt
from models.errors import ModelError
from models.geometry import window_hu
from models.slpt import SLPTConfig, SLPTNet

LABELS = {"0": "background", "1": "liver", "2": "spleen"}


@pytest.fixture
def backbone(tmp_path: Path) -> Path:
    config = BackboneConfig(name="dynunet", out_channels=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    torch.manual_seed(0)
    path = tmp_path / "backbone.pt"
    save_backbone(build_backbone(config), config, path,
                  {"labels": LABELS, "spacing": [2.5, 2.5, 2.5], "hu_window": [-200, 250], "patch_size": [32, 32, 32]})
    return path


def test_monai_builds_the_exported_network_with_its_weights(backbone: Path, tmp_path: Path):
    bundle = export_bundle(backbone, tmp_path / "bundle")
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser.read_meta(bundle / "configs" / "metadata.json")
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    ours, _ = load_backbone(backbone)
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network.eval()(x), ours(x))
    assert parser.get("_meta_")["network_data_format"]["outputs"]["pred"]["channel_def"] == LABELS
    scale = next(t for t in parser["preprocessing"]["transforms"] if t["_target_"] == "ScaleIntensityRanged")
    assert (scale["a_min"], scale["a_max"]) == (-200.0, 250.0)  # the window the backbone was pre-trained with
    assert parser.get_parsed_content("pixdim") == [2.5, 2.5, 2.5]


def test_the_bundle_run_segments_an_image_onto_its_own_grid(backbone: Path, tmp_path: Path):
    bundle = export_bundle(backbone, tmp_path / "bundle")
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    image = rng.normal(40, 120, size=(40, 36, 30)).astype(np.int16)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "data" / "ct.nii.gz")
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    written = nib.load(tmp_path / "out" / "ct_seg.nii.gz")
    assert written.shape == image.shape and np.allclose(written.affine, affine)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    # on a volume already at the working spacing in RAS, the bundle's label map is our backbone's argmax
    nib.save(nib.Nifti1Image(image, np.diag([2.5, 2.5, 2.5, 1.0])), tmp_path / "data" / "ct.nii.gz")
    rerun = subprocess.run(run.args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    from monai.inferers import sliding_window_inference

    ours, _ = load_backbone(backbone)
    with torch.no_grad():
        logits = sliding_window_inference(window_hu(torch.from_numpy(image.astype(np.float32)), (-200, 250))[None, None],
                                          (32, 32, 32), 1, ours, overlap=0.25, mode="gaussian")
    expected = logits.argmax(dim=1)[0].numpy()
    agreement = (np.asarray(nib.load(tmp_path / "out" / "ct_seg.nii.gz").dataobj) == expected).mean()
    assert agreement > 0.99


def test_export_refuses_an_existing_folder_and_a_missing_backbone(backbone: Path, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelError, match="exists"):
        export_bundle(backbone, tmp_path / "taken")
    with pytest.raises(ModelError):
        export_bundle(tmp_path / "missing.pt", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_the_cli_exports_the_shipped_backbone(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "slpt", "export-bundle", "--out", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "b" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["4"] == "lesion"
    again = subprocess.run([sys.executable, "-m", "slpt", "export-bundle", "--out", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr


def tuned_version(backbone: Path, tmp_path: Path) -> Path:
    """A prompt-tuned model version on ``backbone``, with non-trivial prompts and head (as if trained)."""
    network, config = load_backbone(backbone)
    torch.manual_seed(1)
    model = SLPTNet(network, SLPTConfig(roi_size=(32, 32, 32), cascade=CascadeConfig(spacing=(2.5, 2.5, 2.5))))
    with torch.no_grad():
        for p in model.tunable_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return save_slpt(model.eval(), tmp_path / "v1.pt", config)


def test_a_model_version_travels_as_a_bundle_that_monai_alone_runs(backbone: Path, tmp_path: Path):
    version = tuned_version(backbone, tmp_path)
    bundle = export_model_bundle(version, backbone, tmp_path / "bundle")
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser.read_meta(bundle / "configs" / "metadata.json")
    assert parser.get("_meta_")["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "liver", "2": "tumour"}
    # the TorchScript network is the version's prompt ensemble: the mean of the K prompts' softmax maps
    network = torch.jit.load(str(bundle / "models" / "model.ts"))
    model = load_slpt(version, load_backbone(backbone)[0]).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(x), torch.softmax(model.forward_all(x), dim=2).mean(dim=0))

    # MONAI runs it on a NIfTI at the working spacing: the label map is the server's argmax over the whole volume
    (tmp_path / "data").mkdir()
    image = np.random.default_rng(0).normal(40, 120, size=(40, 36, 30)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, np.diag([2.5, 2.5, 2.5, 1.0])), tmp_path / "data" / "ct.nii.gz")
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        probabilities = sliding_window_inference(
            window_hu(torch.from_numpy(image.astype(np.float32)), (-200, 250))[None, None], (32, 32, 32), 1,
            lambda w: torch.softmax(model.forward_all(w), dim=2).mean(dim=0), overlap=0.25, mode="gaussian")
    written = np.asarray(nib.load(tmp_path / "out" / "ct_seg.nii.gz").dataobj)
    assert written.shape == image.shape
    assert (written == probabilities.argmax(dim=1)[0].numpy()).mean() > 0.99


def test_a_version_is_refused_with_another_backbone(backbone: Path, tmp_path: Path):
    version = tuned_version(backbone, tmp_path)
    other = tmp_path / "other.pt"
    config = BackboneConfig(name="dynunet", out_channels=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    torch.manual_seed(5)
    save_backbone(build_backbone(config), config, other, {"labels": LABELS, "spacing": [2.5, 2.5, 2.5]})
    with pytest.raises(ModelError, match="different backbone"):
        export_model_bundle(version, other, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_the_cli_exports_a_model_version_and_refuses_a_missing_one(backbone: Path, tmp_path: Path):
    version = tuned_version(backbone, tmp_path)
    command = [sys.executable, "-m", "slpt", "export-bundle", "--backbone", str(backbone)]
    made = subprocess.run(command + ["--model-version", str(version), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "b" / "models" / "model.ts").is_file()
    missing = subprocess.run(command + ["--model-version", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "c")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "nope.pt" in missing.stderr and not (tmp_path / "c").exists()
