"""The simulator's candidate-subset option (``slpt simulate --candidates``): checked, and part of a study's identity
only when set (studies recorded before it existed keep theirs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.design import SimulationError, check_study, design_identity, study_of
from sim.profiles import PROFILES


def test_candidates_is_part_of_the_identity_only_when_set():
    profile = PROFILES["quick"]
    study = study_of(profile)
    assert "candidates" not in design_identity(profile, study)["study"]
    subset = replace(study, candidates=0.5)
    check_study(subset)
    assert design_identity(profile, subset)["study"]["candidates"] == 0.5


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_a_fraction_outside_0_to_1_is_refused_with_a_message(fraction):
    with pytest.raises(SimulationError, match=r"candidates is a fraction of the unlabeled pool in \[0, 1\)"):
        check_study(replace(study_of(PROFILES["quick"]), candidates=fraction))
