"""docker-compose.yml, .env.example, Dockerfile and .dockerignore: what a GPU-box deployment relies on.

`docker-compose config` (Debian's docker-compose 1.29, installed by .ci/run) validates and resolves the file; the
checks read the resolved form, and the raw file for what must stay an interpolation (secrets).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.docker import ROOT, require

SECRETS = {"POSTGRES_PASSWORD": "pg-example-secret", "SLPT_ADMIN_PASSWORD": "admin-example-secret"}


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def run_compose_config(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess:
    """`docker-compose config` with an .env file holding ``values``."""
    require(None if shutil.which("docker-compose") else "docker-compose is not installed")
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return subprocess.run(["docker-compose", "--file", str(ROOT / "docker-compose.yml"), "--env-file", str(env),
                           "config"], capture_output=True, text=True, timeout=60)


def compose_config(tmp_path: Path, **overrides: str) -> dict:
    done = run_compose_config(tmp_path, {**env_example(), **SECRETS, **overrides})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture
def config(tmp_path: Path) -> dict:
    return compose_config(tmp_path)


def test_services_and_the_order_they_start(config: dict):
    assert set(config["services"]) == {"app", "db"}
    assert config["services"]["app"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(config["services"]["db"]["healthcheck"]["test"])


def test_gpu_is_reserved_and_its_count_configurable(tmp_path: Path, config: dict):
    (device,) = config["services"]["app"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and str(device["count"]) == "1"
    two = compose_config(tmp_path, SLPT_GPU_COUNT="2")
    assert str(two["services"]["app"]["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == "2"


def test_storage_is_mounted_and_kept(config: dict):
    app, db = config["services"]["app"], config["services"]["db"]
    assert any(v.endswith(":/data/studies:rw") for v in app["volumes"])
    assert "models:/data/models:rw" in app["volumes"]
    assert "pgdata:/var/lib/postgresql/data:rw" in db["volumes"]
    assert {"models", "pgdata"} <= set(config["volumes"])


def test_port_is_published_on_loopback_by_default(config: dict):
    assert config["services"]["app"]["ports"] == ["127.0.0.1:8000:8000/tcp"]


def test_settings_reach_the_app(tmp_path: Path):
    env = compose_config(tmp_path, SLPT_SPACING="1.5", SLPT_LEASE_HOURS="4", SLPT_WORK_LEASE_S="120")["services"]["app"]["environment"]
    assert env["SLPT_SPACING"] == "1.5" and env["SLPT_LEASE_HOURS"] == "4" and env["SLPT_AUTH"] == "1"
    assert env["SLPT_WORK_LEASE_S"] == "120" and env["SLPT_WORK_BATCH"] == "32"
    assert env["SLPT_DB"] == f"postgresql+psycopg://slpt:{SECRETS['POSTGRES_PASSWORD']}@db:5432/slpt"
    assert env["SLPT_PRETRAIN_IF_MISSING"] == "1"  # the demo backbone is made at first start if none is given


def test_no_secret_is_written_in_the_files():
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in raw["services"].values():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), f"{key} must come from .env, not the file"
    example = env_example()
    assert example["POSTGRES_PASSWORD"] == "" and example["SLPT_ADMIN_PASSWORD"] == ""


def test_missing_secrets_are_refused(tmp_path: Path):
    done = run_compose_config(tmp_path, env_example())  # passwords left empty, as in .env.example
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def test_dockerfile_runs_unprivileged_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^USER slpt$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert "-r /tmp/requirements.lock" in text
    assert not re.search(r"^(ENV|ARG) .*(PASSWORD|SECRET|TOKEN)", text, re.M)


def test_build_context_leaves_out_local_state():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything is left out, then what the image installs is let back in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {".venv", "demo", "runs", "tests", ".env", ".git"}.isdisjoint(allowed)
    assert "requirements.lock" in allowed and "app" in allowed
