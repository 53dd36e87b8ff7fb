"""A Docker engine for the deployment tests: is one there, and the image built by ``scripts/offline_image.sh``.

``.ci/run`` installs Debian's docker.io, docker-compose and debootstrap and starts ``dockerd`` (host networking
only), so in CI a missing engine is a failure; elsewhere (a laptop without Docker) these tests are skipped with
the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The image the container tests build and run (cached layers are reused while requirements.lock is unchanged).
TEST_IMAGE = "slpt-label:test"


@cache
def docker_unavailable_reason() -> str | None:
    if not shutil.which("docker"):
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[:200]})"
    return None


def require(reason: str | None) -> None:
    """Skip with ``reason``, or fail in CI, where .ci/run provides the tool."""
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker client; on failure the error shows its stderr."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def build_test_image() -> str:
    """Build :data:`TEST_IMAGE` offline (local base, host wheelhouse); its output goes to the test log on failure."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "offline_image.sh"), TEST_IMAGE], cwd=ROOT, capture_output=True, text=True,
        timeout=1500,
    )
    if done.returncode != 0:
        raise AssertionError(f"image build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return TEST_IMAGE
