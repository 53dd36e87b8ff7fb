"""Physical-space geometry: one path from an image file to the working grid, and from the working grid back.

Every consumer — training, inference, scoring, embeddings, pre-training and the simulator — loads volumes with
:func:`load_image` / :func:`load_label` and resamples them with :func:`to_spacing`: MONAI's readers (NIfTI
through nibabel, NRRD/MHA/NRRD-seg through :class:`SimpleITKReader`), ``Orientation`` to RAS and ``Spacing`` to a
fixed spacing in millimetres. Results go back to an image's own voxel grid with :func:`resample_to_grid`, which maps
through the affines (an exact inverse in physical space, whatever the original orientation or obliquity).
See docs/design.md, "Geometry and the liver-ROI cascade".

Arrays are channel-first MONAI ``MetaTensor`` s: (C, X, Y, Z) in the file's voxel order, ``.affine`` a (4, 4)
voxel-to-RAS-millimetre matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import ImageReader, MetaTensor, NibabelReader
from monai.transforms.io.array import switch_endianness
from monai.transforms import NormalizeIntensity, Orientation, ScaleIntensityRange, SpatialResample, Spacing
from monai.utils import ImageMetaKey

from models.errors import ModelError

#: Default working spacing (mm) of the prompt-tuned model: lesions of 5 mm radius are 2 voxels across.
WORKING_SPACING: tuple[float, float, float] = (2.5, 2.5, 2.5)
#: Default spacing (mm) of the cascade's first stage, which only has to find the liver.
COARSE_SPACING: tuple[float, float, float] = (5.0, 5.0, 5.0)
#: Abdominal soft-tissue window in Hounsfield units; values outside are clipped.
HU_WINDOW: tuple[float, float] = (-200.0, 250.0)

Source = str | Path | MetaTensor | np.ndarray
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


class SimpleITKReader(ImageReader):
    """MONAI image reader backed by SimpleITK (NRRD, MHA and whatever else SimpleITK reads).

    SimpleITK reports geometry in LPS; the affine handed to MONAI is converted to RAS, the convention of the
    nibabel reader, so both readers give the same ``MetaTensor`` for the same image.
    """

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(str(n).lower().endswith(_SITK_SUFFIXES) for n in names)

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> Any:
        import SimpleITK as sitk

        names = [data] if isinstance(data, (str, Path)) else list(data)
        images = [sitk.ReadImage(str(n)) for n in names]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        if isinstance(img, list):
            raise ModelError("SimpleITKReader reads one file at a time")
        # GetArrayFromImage gives (Z, Y, X) [, components]; MONAI's voxel order is (X, Y, Z).
        array = sitk.GetArrayFromImage(img)
        spatial = img.GetDimension()
        array = np.transpose(array, tuple(reversed(range(spatial))) + tuple(range(spatial, array.ndim)))
        direction = np.array(img.GetDirection(), dtype=np.float64).reshape(spatial, spatial)
        spacing = np.array(img.GetSpacing(), dtype=np.float64)
        affine = np.eye(4)
        affine[:spatial, :spatial] = direction * spacing
        affine[:spatial, 3] = img.GetOrigin()
        affine = _LPS_TO_RAS @ affine
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.array(array.shape[:spatial]),
            "original_channel_dim": float("nan") if array.ndim == spatial else -1,
            "space": "RAS",
        }
        return array, meta


def _reader_for(path: Path) -> ImageReader:
    return SimpleITKReader() if path.name.lower().endswith(_SITK_SUFFIXES) else NibabelReader()


def _read(path: Path) -> MetaTensor:
    """One file through its MONAI reader, as ``LoadImage(reader=…, image_only=True)`` returns it. ``LoadImage`` itself
    is not used: it builds every reader MONAI knows on each call, and the DICOM GPU decoder among them logs a warning
    each time on a machine without nvImageCodec (114 lines from one server start)."""
    reader = _reader_for(path)
    array, meta = reader.get_data(reader.read(str(path)))
    meta[ImageMetaKey.FILENAME_OR_OBJ] = str(path)
    return MetaTensor.ensure_torch_and_prune_meta(np.asarray(array), switch_endianness(meta, "<"))


def load_image(source: Source, affine: np.ndarray | None = None, dtype: Any = torch.float32) -> MetaTensor:
    """A 3D volume as a (1, X, Y, Z) ``MetaTensor`` with its RAS affine.

    Args:
        source: a file path (NIfTI, NRRD, MHA), a ``MetaTensor`` ((X, Y, Z) or (1, X, Y, Z)), or a bare (X, Y, Z)
            array, which gets ``affine`` (default: identity, 1 mm voxels).
        affine: only for bare arrays.
        dtype: element type of the result.

    Raises:
        ModelError: missing or unreadable file, or data that is not 3D (trailing singleton axes are dropped).
    """
    if isinstance(source, MetaTensor):
        volume = source
    elif isinstance(source, np.ndarray):
        volume = MetaTensor(torch.as_tensor(np.asarray(source)), affine=torch.as_tensor(
            np.eye(4) if affine is None else affine, dtype=torch.float64))
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"volume not found: {path}")
        try:
            volume = _read(path)
        except Exception as exc:  # readers raise many unrelated types for bad files
            raise ModelError(f"cannot read volume {path}: {exc}") from exc
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ModelError(f"expected a 3D volume, got shape {tuple(volume.shape)}")
    out = volume.unsqueeze(0).to(dtype)
    if not isinstance(out, MetaTensor):  # slicing a MetaTensor keeps it one; a plain tensor would not
        out = MetaTensor(out, affine=volume.affine)
    return out


def load_label(source: Source, affine: np.ndarray | None = None) -> MetaTensor:
    """A label map as a (1, X, Y, Z) int64 ``MetaTensor`` (values rounded to the nearest integer)."""
    label = load_image(source, affine, dtype=torch.float32)
    return label.round().to(torch.int64)


def to_spacing(volume: MetaTensor, spacing: Sequence[float], mode: str = "bilinear") -> MetaTensor:
    """Reorient ``volume`` (C, X, Y, Z) to RAS and resample it to ``spacing`` mm.

    ``mode`` is "bilinear" for images (trilinear in 3D) and "nearest" for label maps. The result keeps the
    physical extent; its affine is diagonal up to the original obliquity.
    """
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ModelError(f"spacing needs 3 positive entries in mm, got {tuple(spacing)}")
    dtype = volume.dtype
    oriented = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(volume.float())
    resampled = Spacing(pixdim=tuple(float(s) for s in spacing), mode=mode, padding_mode="border")(oriented)
    return resampled.round().to(dtype) if mode == "nearest" else resampled


def window_hu(volume: torch.Tensor | np.ndarray, window: Sequence[float] = HU_WINDOW) -> torch.Tensor:
    """Clip HU to ``window`` and scale linearly to [0, 1] (MONAI ``ScaleIntensityRange``); same shape, float32."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ModelError(f"HU window must satisfy low < high, got {tuple(window)}")
    scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True, dtype=torch.float32)
    return scale(torch.as_tensor(volume, dtype=torch.float32))


#: How an :class:`Intensity` maps HU: "window" clips to the window and scales it linearly to [0, 1]; "zscore" clips and
#: subtracts a fixed mean, divides by a fixed standard deviation (nnU-Net's ``CTNormalization``); "volume" z-scores by
#: the statistics of each whole volume (MONAI's ``NormalizeIntensityd``, as wholeBody_ct_segmentation), optionally then
#: rescaling that volume's range (``ScaleIntensityd(minv, maxv)``).
IntensityScheme = Literal["window", "zscore", "volume"]


@dataclass(frozen=True)
class Intensity:
    """How CT values (HU) become a backbone's input: a property of the backbone, from its pre-training.

    "window" clips HU to ``window`` and scales it linearly to [0, 1] (our pre-training, a MONAI bundle's
    ``ScaleIntensityRanged``); "zscore" clips and computes ``(hu - mean) / std`` with statistics fixed at training
    time (nnU-Net's ``CTNormalization``: the foreground's 0.5 / 99.5 percentiles as the window, its mean and standard
    deviation). "volume" normalises each volume by its own statistics, as a bundle's ``NormalizeIntensityd`` (over
    the ``nonzero`` voxels only, zeros staying 0, where set) and then ``ScaleIntensityd(*rescale)`` compute them on
    the whole resampled volume. Training and inference see crops of a volume, whose statistics are not the volume's:
    :meth:`for_volume` binds the statistics of the whole working-grid volume, and only a bound "volume" Intensity
    normalises (docs/design.md, "Per-volume intensity").
    """

    window: tuple[float, float] | None = HU_WINDOW
    scheme: IntensityScheme = "window"
    mean: float = 0.0
    std: float = 1.0
    nonzero: bool = False
    rescale: tuple[float, float] | None = None
    #: "volume" bound to one volume: (mean, std, min, max), the last two of the normalised volume (before rescaling).
    volume_stats: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("window", "rescale", "volume_stats"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.scheme not in ("window", "zscore", "volume"):
            raise ModelError(f"unknown intensity scheme {self.scheme!r}; expected window, zscore or volume")
        if self.scheme == "volume":
            if self.window is not None:
                raise ModelError(f"the volume intensity scheme clips to no window, got {self.window}")
        elif self.window is None or len(self.window) != 2 or not self.window[1] > self.window[0]:
            raise ModelError(f"the intensity window must be (low, high) with low < high, got {self.window}")
        if not self.std > 0:
            raise ModelError(f"the intensity standard deviation must be positive, got {self.std}")
        if self.rescale is not None and (self.scheme != "volume" or len(self.rescale) != 2):
            raise ModelError(f"rescale (minv, maxv) belongs to the volume scheme, got {self.rescale} with "
                             f"{self.scheme}")

    @property
    def per_volume(self) -> bool:
        """True where each volume's own statistics are needed (:meth:`for_volume`)."""
        return self.scheme == "volume"

    def for_volume(self, volume: torch.Tensor | np.ndarray) -> Intensity:
        """This Intensity bound to one whole volume (HU on the working grid, any shape), for every crop of it:
        the "volume" scheme's statistics computed as MONAI's ``NormalizeIntensity`` and ``ScaleIntensity`` compute
        them on that volume. Other schemes have fixed statistics and are returned as they are."""
        if not self.per_volume:
            return self
        hu = torch.as_tensor(volume).float()
        hu = hu.as_tensor() if isinstance(hu, MetaTensor) else hu
        values = hu[hu != 0] if self.nonzero else hu.flatten()
        if values.numel() == 0:  # all zero: NormalizeIntensity leaves it as it is
            return replace(self, volume_stats=(0.0, 1.0, 0.0, 0.0))
        mean = float(torch.mean(values))
        std = float(torch.std(values, unbiased=False)) or 1.0  # NormalizeIntensity divides by 1 where std is 0
        # The normalised volume's range without normalising it: the map is increasing, so its extremes are those of
        # the values (float32, as NormalizeIntensity computes them), and 0 where zeros stayed 0.
        low, high = float((values.min() - mean) / std), float((values.max() - mean) / std)
        if values.numel() < hu.numel():
            low, high = min(low, 0.0), max(high, 0.0)
        return replace(self, volume_stats=(mean, std, low, high))

    def _normalise(self, hu: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        return NormalizeIntensity(subtrahend=mean, divisor=std, nonzero=self.nonzero)(hu)

    def __call__(self, volume: torch.Tensor | np.ndarray) -> torch.Tensor:
        """HU -> network input, any shape, float32. A "volume" Intensity must be bound (:meth:`for_volume`)."""
        if self.scheme == "window":
            return window_hu(volume, self.window)
        hu = torch.as_tensor(volume, dtype=torch.float32)
        hu = hu.as_tensor() if isinstance(hu, MetaTensor) else hu
        if self.scheme == "zscore":
            return (hu.clamp(*self.window) - self.mean) / self.std
        if self.volume_stats is None:
            raise ModelError("the volume intensity scheme normalises by a whole volume's statistics: bind them with "
                             "Intensity.for_volume(working volume) where the volume is loaded, not on a crop")
        mean, std, low, high = self.volume_stats
        normalised = torch.as_tensor(self._normalise(hu.clone(), mean, std), dtype=torch.float32)
        if self.rescale is None:
            return normalised
        minv, maxv = self.rescale
        if high == low:  # ScaleIntensity of a constant volume: every value times minv
            return normalised * minv
        return ScaleIntensityRange(a_min=low, a_max=high, b_min=minv, b_max=maxv, clip=False,
                                   dtype=torch.float32)(normalised)

    def to_dict(self) -> dict[str, Any]:
        """The backbone's Intensity as plain values (never a bound one's statistics)."""
        return {"window": None if self.window is None else list(self.window), "scheme": self.scheme,
                "mean": self.mean, "std": self.std, "nonzero": self.nonzero,
                "rescale": None if self.rescale is None else list(self.rescale)}


def affine_of(volume: MetaTensor) -> np.ndarray:
    """The (4, 4) voxel-to-RAS affine of a ``MetaTensor`` as float64 numpy."""
    return np.asarray(volume.affine, dtype=np.float64)


@dataclass(frozen=True)
class Box:
    """A box of voxels ``[start, stop)`` on some grid, per spatial axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(b - a) for a, b in zip(self.start, self.stop))

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.start, self.stop))

    def crop(self, volume: MetaTensor) -> MetaTensor:
        """(C, *grid) -> (C, *box) with the affine moved to the box's first voxel."""
        cropped = volume[(slice(None), *self.slices())]
        shifted = affine_of(volume) @ _translation(self.start)
        return MetaTensor(cropped.as_tensor() if isinstance(cropped, MetaTensor) else cropped,
                          affine=torch.as_tensor(shifted))

    def contains(self, other: Box) -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    @classmethod
    def whole(cls, shape: Sequence[int]) -> Box:
        return cls((0, 0, 0), tuple(int(s) for s in shape[-3:]))

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Box | None:
        """Tight box around the True voxels of an (X, Y, Z) mask; None when empty."""
        hits = np.argwhere(mask)
        if not len(hits):
            return None
        return cls(tuple(int(v) for v in hits.min(axis=0)), tuple(int(v) + 1 for v in hits.max(axis=0)))

    def union(self, other: Box) -> Box:
        return Box(tuple(min(a, b) for a, b in zip(self.start, other.start)),
                   tuple(max(a, b) for a, b in zip(self.stop, other.stop)))


def _translation(offset: Sequence[int]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def box_on_grid(
    src_box: Box, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int], margin_mm: float = 0.0
) -> Box:
    """The box of a grid (``dst_affine``, ``dst_shape``) covering ``src_box`` of another grid plus ``margin_mm``.

    Works through physical space: the 8 corners of the source box (voxel edges, not centres) are mapped to
    the destination grid, the covering integer box is grown by the margin and clipped to the grid.
    """
    corners = np.array([[a - 0.5 if c == 0 else b - 0.5 for c, a, b in zip(bits, src_box.start, src_box.stop)]
                        for bits in np.ndindex(2, 2, 2)], dtype=np.float64)
    to_dst = np.linalg.inv(dst_affine) @ src_affine
    mapped = (to_dst[:3, :3] @ corners.T).T + to_dst[:3, 3]
    spacing = np.linalg.norm(dst_affine[:3, :3], axis=0)
    grow = margin_mm / spacing
    start = np.floor(mapped.min(axis=0) - grow + 0.5).astype(int)
    stop = np.ceil(mapped.max(axis=0) + grow + 0.5).astype(int)
    shape = np.asarray(dst_shape[-3:])
    return Box(tuple(np.clip(start, 0, shape).tolist()), tuple(np.clip(stop, 0, shape).tolist()))


def resample_to_grid(
    data: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int], mode: str = "bilinear"
) -> torch.Tensor:
    """Resample (C, *src) data on ``src_affine`` onto the grid (``dst_affine``, ``dst_shape``): -> (C, *dst_shape).

    Voxels of the destination that lie outside the source get 0 (background for probabilities and labels).
    """
    source = MetaTensor(torch.as_tensor(data).float(), affine=torch.as_tensor(src_affine, dtype=torch.float64))
    out = SpatialResample(mode=mode, padding_mode="zeros")(
        source, dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64), spatial_size=tuple(int(s) for s in dst_shape)
    )
    return torch.as_tensor(out.as_tensor() if isinstance(out, MetaTensor) else out)


def map_to_grid(
    values: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int],
    mode: str = "bilinear",
) -> tuple[torch.Tensor, Box]:
    """Map (C, *roi) values on ``src_affine`` onto the part of a destination grid that they cover.

    Only the covered box of the destination is resampled, so a small ROI on a large original image costs what
    the ROI costs. Returns (values (C, *box.shape) on that box, the box); box voxels beyond the source's edge
    are 0 in every channel.
    """
    dst_shape = tuple(int(s) for s in dst_shape[-3:])
    box = box_on_grid(Box.whole(values.shape[1:]), src_affine, dst_affine, dst_shape)
    if min(box.shape) == 0:
        return torch.zeros((values.shape[0], *box.shape)), box
    box_affine = dst_affine @ _translation(box.start)
    return resample_to_grid(values, src_affine, box_affine, box.shape, mode=mode), box
