"""Volume loading and the one intensity preprocessing used everywhere.

Training, inference, pre-training and embeddings all call :func:`window_hu`, so a model always sees
intensities scaled exactly the way it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from models.errors import ModelError

#: Abdominal soft-tissue window in Hounsfield units; values outside are clipped.
HU_WINDOW: tuple[float, float] = (-200.0, 250.0)

VolumeSource = np.ndarray | str | Path


def window_hu(image_hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Clip a CT volume to ``window`` (HU) and scale it linearly to [0, 1].

    Args:
        image_hu: array of any shape, Hounsfield units.
        window: (low, high) HU bounds, low < high.

    Returns:
        float32 array of the same shape with values in [0, 1].
    """
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ModelError(f"HU window must satisfy low < high, got {window}")
    scaled = (np.asarray(image_hu, dtype=np.float32) - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def load_volume(source: VolumeSource) -> np.ndarray:
    """Return a 3D volume from an array or a NIfTI path (voxel order as stored in the file).

    Trailing singleton dimensions (e.g. a 4D file with one frame) are dropped.

    Raises:
        ModelError: the file is missing or unreadable, or the data is not 3D.
    """
    if isinstance(source, np.ndarray):
        volume = source
        name = "array"
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"volume not found: {path}")
        try:
            volume = np.asanyarray(nib.load(str(path)).dataobj)
        except Exception as exc:  # nibabel raises several unrelated types for bad files
            raise ModelError(f"cannot read volume {path}: {exc}") from exc
        name = str(path)
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ModelError(f"expected a 3D volume, got shape {tuple(volume.shape)} from {name}")
    return np.asarray(volume)
