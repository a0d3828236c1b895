"""The distribution builds as an sdist and a wheel that ``twine check --strict`` accepts.

The same two steps run in ``.github/workflows/release.yml`` before a release is published.
The build runs without isolation, on the setuptools that the ``test`` extra installs, so it
needs no download and takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import companion

ROOT = Path(__file__).resolve().parents[1]
NAME = "retention_companion"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    result = _run("build", "--no-isolation", "--outdir", str(out), ".")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # setuptools warns of deprecated metadata (such as a license table) long before it
    # refuses it: keep the build free of such warnings
    assert "deprecated" not in log.lower(), log[-4000:]
    files = sorted(out.iterdir())
    version = companion.__version__
    assert [f.name for f in files] == [f"{NAME}-{version}-py3-none-any.whl",
                                       f"{NAME}-{version}.tar.gz"], files
    return {"wheel": files[0], "sdist": files[1]}


def test_twine_check_strict_passes(dist):
    result = _run("twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_package_its_metadata_and_licence(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"{NAME}-{companion.__version__}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    modules = {p.name for p in (ROOT / "companion").glob("*.py")}
    assert {f"companion/{m}" for m in modules} <= names
    assert not any(n.startswith(("tests/", "tools/", "book/")) for n in names)
    assert f"{info}/licenses/LICENSE" in names
    assert metadata["Name"] == "retention-companion"
    assert metadata["Version"] == companion.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "retention-companion = companion.cli:main" in entry_points


def test_sdist_holds_the_sources_and_the_licence(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = set(sdist.getnames())
    top = f"{NAME}-{companion.__version__}"
    for path in ("pyproject.toml", "README.md", "LICENSE", "companion/__init__.py",
                 "companion/cli.py"):
        assert f"{top}/{path}" in names, path


def test_twine_check_fails_on_a_broken_description(dist, tmp_path):
    """The check can fail: a wheel whose reStructuredText description does not render."""
    broken = tmp_path / dist["wheel"].name
    with zipfile.ZipFile(dist["wheel"]) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith(".dist-info/METADATA"):
                head = data.decode().split("\n\n", 1)[0]
                head = head.replace("Description-Content-Type: text/markdown",
                                    "Description-Content-Type: text/x-rst")
                data = (head + "\n\nTitle\n=====\n\n.. not-a-directive::\n\n`unclosed\n").encode()
            target.writestr(item, data)
    result = _run("twine", "check", "--strict", str(broken))
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout and "long_description" in result.stdout, result.stdout
