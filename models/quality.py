"""How far a pre-segmentation is from the label an annotator made of it: the figures of prospective quality
(docs/design.md, "Prospective quality"). Pure NumPy/SciPy on class maps (0 background, 1 liver, 2 tumour), shared by
the server's quality job and anything else that compares two label maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

LIVER, TUMOUR = 1, 2
#: What makes one lesion: tumour voxels that touch by a face, an edge or a corner (26-connectivity). Every lesion-level
#: figure (prospective quality, reader agreement, the simulator's evaluation) counts lesions with this one structure.
LESION_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The lesions of a 3D tumour mask: (component index per voxel (X, Y, Z), 0 outside; number of lesions)."""
    return ndimage.label(mask, structure=LESION_STRUCTURE)


def dice(overlap: int, predicted: int, truth: int) -> float:
    """2|P ∩ T| / (|P| + |T|); 1.0 when both are empty."""
    return 2.0 * overlap / (predicted + truth) if predicted + truth else 1.0


def mask_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return dice(int((predicted & truth).sum()), int(predicted.sum()), int(truth.sum()))


def lesion_matches(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(found, missed, false) lesions of two tumour masks: a labelled lesion (:func:`lesion_components`) is found
    when a predicted lesion touches it; a predicted lesion that touches no labelled lesion is false."""
    predicted_components, _ = lesion_components(predicted)
    truth_components, n_lesions = lesion_components(truth)
    touched = set(np.unique(predicted_components[truth_components > 0])) - {0}
    false = len(set(np.unique(predicted_components)) - {0} - touched)
    found = sum(
        1 for lesion in range(1, n_lesions + 1)
        if (predicted_components[truth_components == lesion] > 0).any()
    )
    return found, n_lesions - found, false


def detection_f1(found: int, missed: int, false: int) -> float | None:
    """Lesion-level F1; ``None`` when neither map has a lesion (nothing to detect, nothing wrongly detected)."""
    denominator = 2 * found + missed + false
    return 2 * found / denominator if denominator else None


@dataclass(frozen=True)
class LabelAgreement:
    """A pre-segmentation against the final label. ``tumour_dice`` is ``None`` when the label has no tumour (Dice
    of an empty truth says only whether the model kept quiet, which ``lesion_f1`` already counts)."""

    liver_dice: float
    tumour_dice: float | None
    lesion_f1: float | None
    edit_fraction: float

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def label_agreement(prediction: np.ndarray, label: np.ndarray) -> LabelAgreement:
    """Compare two class maps on one grid. Liver Dice is over the whole liver (tumour included, the LiTS
    convention). The edit fraction is the share of voxels whose class the annotator changed among the voxels either
    map calls foreground: over the whole volume it would be tiny and mostly say how large the abdomen is."""
    if prediction.shape != label.shape:
        raise ValueError(f"prediction {prediction.shape} and label {label.shape} are not on one grid")
    tumour_truth = label == TUMOUR
    tumour_predicted = prediction == TUMOUR
    foreground = (prediction > 0) | (label > 0)
    changed = int(((prediction != label) & foreground).sum())
    return LabelAgreement(
        liver_dice=mask_dice(prediction >= LIVER, label >= LIVER),
        tumour_dice=mask_dice(tumour_predicted, tumour_truth) if tumour_truth.any() else None,
        lesion_f1=detection_f1(*lesion_matches(tumour_predicted, tumour_truth)),
        edit_fraction=changed / int(foreground.sum()) if foreground.any() else 0.0,
    )
