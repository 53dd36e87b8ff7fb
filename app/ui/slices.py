"""A volume as a picture: a few axial slices with the final label (top row) and the model's uncertainty (bottom row)
overlaid, rendered on the server as one PNG and kept on disk by what it shows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from models.geometry import HU_WINDOW
from storage.atomic import atomic_path

SLICES = 4
PANEL = 192  # pixels per slice panel
LABEL_COLOURS = {1: (60, 200, 90), 2: (230, 50, 50)}  # liver, tumour


def read_volume(path: str) -> np.ndarray:
    """A volume in nibabel's axis order (x, y, z), the order the pre-segmentations use."""
    return sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(2, 1, 0)


def slice_indices(depth: int, focus: np.ndarray | None) -> list[int]:
    """Evenly spread axial slices, through the labelled region when there is one."""
    if focus is not None and focus.any():
        zs = np.nonzero(focus.any(axis=(0, 1)))[0]
        low, high = int(zs.min()), int(zs.max())
    else:
        low, high = 0, depth - 1
    return sorted(set(np.linspace(low, high, SLICES + 2)[1:-1].round().astype(int).tolist())) or [depth // 2]


def _grey(image: np.ndarray) -> np.ndarray:
    low, high = HU_WINDOW
    return (np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _panel(rgb: np.ndarray) -> np.ndarray:
    """A slice (x, y, 3) shown with anterior up and enlarged (nearest neighbour) to the panel size."""
    shown = np.rot90(rgb)
    scale = max(1, PANEL // max(shown.shape[:2]))
    return np.kron(shown, np.ones((scale, scale, 1), dtype=np.uint8))


def render(image: np.ndarray, label: np.ndarray | None, uncertainty: np.ndarray | None) -> bytes:
    indices = slice_indices(image.shape[2], label)
    rows = []
    for overlay in ("label", "uncertainty"):
        panels = []
        for z in indices:
            grey = _grey(image[:, :, z].astype(np.float32))
            rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
            if overlay == "label" and label is not None:
                for value, colour in LABEL_COLOURS.items():
                    mask = label[:, :, z] == value
                    rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array(colour)
            if overlay == "uncertainty" and uncertainty is not None:
                heat = uncertainty[:, :, z] / max(float(uncertainty.max()), 1e-6)
                alpha = np.clip(heat, 0, 1)[..., None] * 0.8
                rgb = (1 - alpha) * rgb + alpha * np.array((255.0, 200.0, 0.0))
            panels.append(_panel(rgb.astype(np.uint8)))
        height = max(p.shape[0] for p in panels)
        panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
        rows.append(np.concatenate(panels, axis=1))
    width = max(r.shape[1] for r in rows)
    picture = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    out = io.BytesIO()
    Image.fromarray(picture).save(out, format="PNG")
    return out.getvalue()


def cached_picture(cache: Path, key: str, make) -> bytes:
    """The PNG stored under ``key`` (what it shows: volume, label version, model version), made once."""
    path = cache / f"{key}.png"
    if path.is_file():
        return path.read_bytes()
    data = make()
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return data
