"""The `slpt` CLI run as a user runs it: a real process, its exit code and its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest



def slpt(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a real process (used where the process boundary matters)."""
    return subprocess.run([sys.executable, "-m", "slpt", *args], capture_output=True, text=True, timeout=300)


def slpt_inline(*args: str):
    """The same CLI, in this process (no interpreter start-up): exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from slpt.main import cli

    return CliRunner().invoke(cli, list(args))


def test_synth_writes_an_msd_cohort(tmp_path: Path):
    result = slpt("synth", "--out", str(tmp_path / "c"), "--cases", "3", "--size", "16", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "c" / "imagesTr").iterdir()) == [
        "case_0000.nii.gz",
        "case_0001.nii.gz",
        "case_0002.nii.gz",
    ]
    assert (tmp_path / "c" / "dataset.json").is_file()


def test_synth_refuses_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("precious")
    result = slpt_inline("synth", "--out", str(tmp_path), "--cases", "2", "--size", "16")
    assert result.exit_code != 0
    assert "not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_synth_refuses_zero_cases(tmp_path: Path):
    result = slpt_inline("synth", "--out", str(tmp_path / "c"), "--cases", "0")
    assert result.exit_code != 0
    assert "cases" in result.stderr
    assert not (tmp_path / "c").exists()


def test_synth_refuses_an_unwritable_path(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "cohort"
    result = slpt_inline("synth", "--out", str(out), "--cases", "2", "--size", "16")
    assert result.exit_code != 0
    assert str(tmp_path / "file") in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_missing_folder(tmp_path: Path):
    result = slpt("serve", "--studies", str(tmp_path / "missing"), "--port", "1")
    assert result.returncode != 0
    assert "studies folder not found" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_db_upgrade_migrates_sqlite_and_postgresql(tmp_path: Path):
    from sqlalchemy import create_engine, inspect

    from db.engine import normalise_url
    from tests.pg import temporary_database

    sqlite_url = f"sqlite:///{tmp_path / 'slpt.db'}"
    with temporary_database() as pg_url:
        for url in (sqlite_url, pg_url):
            result = slpt_inline("db", "upgrade", "--db", url)
            assert result.exit_code == 0, result.stderr
            engine = create_engine(normalise_url(url))
            assert {"images", "labels", "assignments", "scores", "model_versions"} <= set(inspect(engine).get_table_names())
            engine.dispose()


def test_db_upgrade_on_an_unreachable_server_fails_cleanly():
    result = slpt_inline("db", "upgrade", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code != 0
    assert "cannot upgrade" in result.stderr and "Traceback" not in result.stderr


def test_model_info_reports_the_tunable_fraction():
    import json

    result = slpt_inline("model-info", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_prompts"] == 3
    assert 0 < info["tunable_params"] < info["total_params"]
    assert info["tunable_fraction"] == info["tunable_params"] / info["total_params"] <= 0.06


def test_model_info_on_a_corrupt_checkpoint_names_the_problem(tmp_path: Path):
    from models.backbone import BackboneConfig, build_backbone, save_backbone

    bad = tmp_path / "backbone.pt"
    save_backbone(build_backbone(BackboneConfig()), BackboneConfig(), bad)  # a valid config beside it...
    bad.write_bytes(b"not a checkpoint")  # ...and corrupt weights
    result = slpt_inline("model-info", "--json", "--backbone", str(bad))
    assert result.exit_code != 0
    assert str(bad) in result.stderr and "Traceback" not in result.stderr


def test_model_info_on_a_checkpoint_of_another_architecture_names_the_mismatch(tmp_path: Path):
    import torch

    from models.backbone import BackboneConfig, build_backbone

    path = tmp_path / "other.pt"
    torch.save(build_backbone(BackboneConfig(channels=(8, 16, 32), strides=(2, 2))).state_dict(), path)
    result = slpt_inline("model-info", "--json", "--backbone", str(path))
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    assert "missing" in result.stderr or "mismatch" in result.stderr or "unexpected" in result.stderr


def test_serve_refuses_a_public_address_with_auth_off(tmp_path: Path, tiny_cohort: Path):
    result = slpt("serve", "--studies", str(tiny_cohort), "--host", "0.0.0.0", "--port", "1")
    assert result.returncode != 0
    assert "refusing to serve 0.0.0.0 with auth off" in result.stderr


def test_admin_create_user_migrates_a_new_database_and_prints_a_working_token(tmp_path: Path):
    from sqlalchemy import select

    from db.engine import create_db_engine, session_factory
    from db.schema import User
    from db.users import authenticate, live_api_token
    from tests.pg import temporary_database

    with temporary_database() as pg_url:
        for url in (f"sqlite:///{tmp_path / 'new.db'}", pg_url):
            result = slpt_inline("admin", "create-user", "carol", "--role", "reviewer", "--password", "carolpass1",
                                 "--db", url)
            assert result.exit_code == 0, result.stderr
            token = result.stdout.strip().splitlines()[-1]
            engine = create_db_engine(url)
            with session_factory(engine)() as session:
                assert session.scalar(select(User.role).where(User.username == "carol")) == "reviewer"
                assert live_api_token(session, token)[0].username == "carol"
                assert authenticate(session, "carol", "carolpass1") is not None
                assert token not in str(session.scalars(select(User.password_hash)).all())
            engine.dispose()
            again = slpt_inline("admin", "create-user", "carol", "--role", "admin", "--db", url)
            assert again.exit_code != 0 and "exists already" in again.stderr


def test_admin_create_user_uses_the_studies_folders_database(tmp_path: Path, tiny_cohort: Path):
    import shutil

    from db.engine import create_db_engine, default_db_url, session_factory
    from db.users import get_user

    studies = tmp_path / "studies"
    shutil.copytree(tiny_cohort, studies)
    result = slpt_inline("admin", "create-user", "dave", "--role", "annotator", "--studies", str(studies))
    assert result.exit_code == 0, result.stderr
    engine = create_db_engine(default_db_url(studies))
    with session_factory(engine)() as session:
        assert get_user(session, "dave").role == "annotator"
    engine.dispose()


@pytest.mark.parametrize("args, message", [
    (["--role", "boss", "--db", "DB"], "unknown role"),
    (["--role", "admin"], "exactly one of --studies DIR or --db URL"),
    (["--role", "admin", "--password", "short", "--db", "DB"], "at least 8 characters"),
])
def test_admin_create_user_refuses_bad_input_with_a_message(args, message, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'users.db'}"
    result = slpt_inline("admin", "create-user", "erin", *[url if a == "DB" else a for a in args])
    assert result.exit_code != 0
    assert message in result.stderr


def test_demo_makes_its_cohort_and_installs_the_shipped_backbone_without_pre_training(tmp_path: Path):
    from models.recipes import EMBEDDED_SHA256
    from storage.digest import file_sha256

    result = slpt_inline("demo", "--dir", str(tmp_path / "demo"), "--cases", "2", "--size", "24")
    assert result.exit_code == 0, result.output
    backbone = tmp_path / "demo" / "studies" / ".slpt" / "backbone.pt"
    assert file_sha256(backbone) == EMBEDDED_SHA256 and backbone.with_suffix(".json").is_file()
    assert not (tmp_path / "demo" / "upstream").exists()  # nothing was pre-trained
    assert len(list((tmp_path / "demo" / "studies" / "imagesTr").iterdir())) == 2
