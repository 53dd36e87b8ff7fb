"""Label-map agreement: Dice, lesion-level detection F1 and the edit fraction on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from models.quality import label_agreement, lesion_components, lesion_matches


def liver_with_lesions(lesions: list[tuple[int, int]]) -> np.ndarray:
    label = np.zeros((20, 20, 4), dtype=np.uint8)
    label[2:18, 2:18] = 1
    for x, y in lesions:
        label[x:x + 2, y:y + 2] = 2
    return label


def test_a_kept_pre_segmentation_agrees_fully():
    label = liver_with_lesions([(4, 4), (12, 12)])
    agreement = label_agreement(label, label)
    assert agreement.as_dict() == {"liver_dice": 1.0, "tumour_dice": 1.0, "lesion_f1": 1.0, "edit_fraction": 0.0}


def test_a_missed_lesion_and_a_false_one_count_at_lesion_level():
    truth = liver_with_lesions([(4, 4), (12, 12)])
    predicted = liver_with_lesions([(4, 4), (8, 14)])  # one found, one missed, one false
    assert lesion_matches(predicted == 2, truth == 2) == (1, 1, 1)
    agreement = label_agreement(predicted, truth)
    assert agreement.lesion_f1 == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert agreement.tumour_dice == pytest.approx(2 * 16 / (32 + 32))
    changed = 2 * 16  # voxels whose class differs: the missed and the false lesion (each 2 x 2 x 4)
    assert agreement.edit_fraction == pytest.approx(changed / int((truth > 0).sum()))


def test_no_tumour_in_the_label_leaves_tumour_dice_undefined_and_no_lesions_leaves_f1_undefined():
    empty_liver = liver_with_lesions([])
    agreement = label_agreement(empty_liver, empty_liver)
    assert agreement.tumour_dice is None and agreement.lesion_f1 is None
    false_alarm = label_agreement(liver_with_lesions([(6, 6)]), empty_liver)
    assert false_alarm.tumour_dice is None and false_alarm.lesion_f1 == 0.0


def test_maps_on_different_grids_are_refused():
    with pytest.raises(ValueError, match="one grid"):
        label_agreement(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8))


def test_lesions_touching_by_a_corner_are_one_lesion_everywhere():
    # Two cubes that share only a corner voxel: one lesion for quality, agreement and the simulator alike.
    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[1:3, 1:3, 1:3] = 2
    truth[3:5, 3:5, 3:5] = 2
    assert lesion_components(truth == 2)[1] == 1
    found_half = truth.copy()
    found_half[3:5, 3:5, 3:5] = 0
    assert lesion_matches(found_half == 2, truth == 2) == (1, 0, 0)
