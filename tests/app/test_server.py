"""The real server over a generated MSD cohort: what 3D Slicer's MONAI Label plugin calls."""

from __future__ import annotations

from pathlib import Path

import httpx


def test_info_names_the_app_and_its_strategies(server):
    info = httpx.get(f"{server.url}/info/", timeout=30).json()
    assert info["name"] == "slpt-label"
    assert info["labels"] == {"liver": 1, "tumour": 2}
    assert {"random", "first"} <= set(info["strategies"])
    assert "config" not in info  # Slicer must not see a top-level config key (docs/design.md, "Stack facts")


def test_datastore_stats_count_the_served_volumes(server, served_cohort: Path):
    stats = httpx.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    assert stats["total"] == len(list((served_cohort / "imagesTr").glob("*.nii.gz")))
    assert stats["completed"] == 0  # labelsTr/ is ground truth, not annotators' labels


def test_next_sample_returns_a_served_volume(server, served_cohort: Path):
    sample = httpx.post(f"{server.url}/activelearning/first", json={"client_id": "ann-1"}, timeout=30).json()
    assert sample["id"] == "case_0000"
    assert Path(sample["path"]).resolve() == (served_cohort / "imagesTr" / "case_0000.nii.gz").resolve()
    image = httpx.get(f"{server.url}/datastore/image", params={"image": sample["id"]}, timeout=30)
    assert image.status_code == 200
    assert image.content == (served_cohort / "imagesTr" / "case_0000.nii.gz").read_bytes()
