"""Rendering one case on a non-cubic grid (``render_case(..., shape=, spacing=)``, used by ``slpt bench infer``)."""

from __future__ import annotations

import numpy as np
import pytest

from cohort.phantom import draw_grid, render_case
from cohort.shapes import Grid
from cohort.synth import case_plan, case_rng


def test_a_cubic_shape_renders_exactly_the_cubic_case() -> None:
    group, has_tumour = case_plan(5, 1)
    cubic = render_case(case_rng(5, 1), group, 20, with_tumour=has_tumour)
    same = render_case(case_rng(5, 1), group, 20, with_tumour=has_tumour, shape=(20, 20, 20))
    np.testing.assert_array_equal(cubic.image, same.image)
    np.testing.assert_array_equal(cubic.label_map(False), same.label_map(False))
    np.testing.assert_array_equal(cubic.grid.affine, same.grid.affine)


def test_shape_and_spacing_set_the_grid_and_the_anatomy_stays_in_patient_mm() -> None:
    group, has_tumour = case_plan(0, 0)
    phantom = render_case(case_rng(0, 0), group, 24, with_tumour=has_tumour, shape=(40, 36, 20), spacing=(9.0, 9.0, 15.0))
    assert phantom.image.shape == phantom.liver.shape == (40, 36, 20)
    assert phantom.grid.spacing == (9.0, 9.0, 15.0)
    np.testing.assert_allclose(np.abs(np.diag(phantom.grid.affine)[:3]), (9.0, 9.0, 15.0))
    assert phantom.liver.any() and not (phantom.tumour & ~phantom.liver).any()
    liver_ml = phantom.liver.sum() * 9 * 9 * 15 / 1000
    assert 500 < liver_ml < 4000, liver_ml  # an adult liver, in patient millimetres whatever the grid

def test_grid_axial_centres_a_non_cubic_grid() -> None:
    grid = Grid.axial(8, 2.0, 3.0, top_sup_mm=100.0, shape=(4, 6, 5))
    assert grid.shape == (4, 6, 5)
    assert float(grid.lat.mean()) == pytest.approx(0.0) and float(grid.post.mean()) == pytest.approx(0.0)
    assert float(grid.sup[0, 0, -1]) == pytest.approx(100.0)
    voxel = grid.affine @ np.array([3, 5, 4, 1.0])  # the last voxel in RAS: lat -> -x, post -> -y
    np.testing.assert_allclose(voxel[:3], [-grid.lat[3, 0, 0], -grid.post[0, 5, 0], grid.sup[0, 0, 4]])


@pytest.mark.parametrize("shape, spacing", [((8, 8), None), ((8, 8, 0), None), (None, (1.0, 2.0, 3.0)), (None, (1.0, 1.0, -1.0))])
def test_bad_grids_are_refused(shape, spacing) -> None:
    group, _ = case_plan(0, 0)
    with pytest.raises(ValueError):
        draw_grid(case_rng(0, 0), group, 16, shape=shape, spacing=spacing)
