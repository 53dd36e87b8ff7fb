"""MONAI Label puts the app folder on PYTHONPATH of its training and scoring processes, so a module in app/ with the
name of a top-level package would shadow it there (an `app/strategies.py` once broke every training run)."""

from __future__ import annotations

from pathlib import Path

import app

TOP_LEVEL_PACKAGES = {"app", "bench", "cohort", "db", "experiments", "models", "sim", "slpt", "storage", "strategies", "tests"}


def test_no_app_module_shadows_a_top_level_package():
    folder = Path(app.__file__).parent
    names = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    assert not names & TOP_LEVEL_PACKAGES
