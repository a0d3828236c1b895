"""0.1.0 compatibility: the old module names still import, with a warning, and the model
artifacts that 0.1.0 wrote still load and recommend the same lists."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import companion
from companion import _compat
from companion.ops import export

FIXTURES = Path(__file__).parent / "fixtures" / "artifacts-0.1.0"
#: the modules of the flat 0.1.0 package (besides data, cli, shop, plotting, book, cache)
MODULES_0_1_0 = {
    "ads", "aftersales", "automl", "bandits", "behaviour", "btyd", "churn", "compression",
    "content", "deep", "embeddings", "evaluation", "experiments", "explain", "export",
    "federated", "incremental", "losses", "metrics", "models", "monitoring", "nn", "optim",
    "preprocessing", "ranking", "recommenders", "serving", "simulation", "spark", "supply",
    "textgen", "twostage",
}


def test_every_old_module_has_a_new_home():
    assert set(_compat.MOVED) == MODULES_0_1_0
    for old, new in _compat.MOVED.items():
        assert new.startswith("companion.") and new.count(".") == 2, (old, new)
        assert importlib.util.find_spec(new) is not None, new


@pytest.mark.parametrize("old", sorted(MODULES_0_1_0))
def test_old_name_warns_and_forwards(old):
    """Each old name imports in a fresh interpreter, warns once at the importing line, and
    gives the same objects as the new module."""
    new = _compat.MOVED[old]
    code = (f"import warnings\nwarnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    from companion import {old}\nexcept DeprecationWarning as err:\n"
            f"    print('warned:', err)\n"
            f"warnings.simplefilter('ignore')\n"
            f"from companion import {old} as alias\nimport {new} as target\n"
            f"public = [n for n in dir(target) if not n.startswith('_')]\n"
            f"assert public and all(getattr(alias, n) is getattr(target, n) for n in public)\n"
            f"print('same objects:', len(public))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"warned: companion.{old} moved to {new} in 0.2.0" in done.stdout
    assert "same objects:" in done.stdout


def test_warning_points_at_the_importing_line():
    sys.modules.pop("companion.recommenders", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from companion.recommenders import ItemKNN  # noqa: F401
    moved = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(moved) == 1 and moved[0].filename == __file__
    assert "companion.recsys.baselines" in str(moved[0].message)


def test_unknown_names_still_fail():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("companion.no_such_module")
    with pytest.raises(AttributeError):
        importlib.import_module("companion.recommenders").no_such_name  # noqa: B018


def test_version_moved_on():
    assert companion.__version__ != "0.1.0"


@pytest.mark.parametrize("name", ["itemknn", "blend", "two_tower"])
def test_artifacts_of_0_1_0_load_and_agree(name):
    path = FIXTURES / name
    loaded = export.load(path)
    users = np.load(path / "users.npy", allow_pickle=False)
    expected = np.load(path / "expected.npy", allow_pickle=False)
    got = loaded.model.recommend(users, 10, exclude_seen=True)
    np.testing.assert_array_equal(got.astype(str), expected)
