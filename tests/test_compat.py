"""0.1.0 compatibility: the old module names still import, with a warning, and the model
artifacts that 0.1.0 wrote still load and recommend the same lists."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
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


def test_old_names_warn_and_forward():
    """Each old name imports in a fresh interpreter (one for all of them: each old module is
    dropped from sys.modules before the next import), warns at the importing line, and
    gives the same objects as the new module."""
    code = ("import importlib, sys, warnings\n"
            "from companion import _compat\n"
            f"for old in {sorted(MODULES_0_1_0)!r}:\n"
            "    new = _compat.MOVED[old]\n"
            "    sys.modules.pop('companion.' + old, None)\n"
            "    with warnings.catch_warnings():\n"
            "        warnings.simplefilter('error', DeprecationWarning)\n"
            "        try:\n"
            "            alias = importlib.import_module('companion.' + old)\n"
            "        except DeprecationWarning as err:\n"
            "            print('warned:', err)\n"
            "    with warnings.catch_warnings():\n"
            "        warnings.simplefilter('ignore')\n"
            "        alias = importlib.import_module('companion.' + old)\n"
            "    target = importlib.import_module(new)\n"
            "    public = [n for n in dir(target) if not n.startswith('_')]\n"
            "    assert public and all(getattr(alias, n) is getattr(target, n)\n"
            "                          for n in public), old\n"
            "    print('same objects:', old, len(public))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    for old, new in _compat.MOVED.items():
        assert f"warned: companion.{old} moved to {new} in 0.2.0" in done.stdout
        assert f"same objects: {old} " in done.stdout


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


# ------------------------------------------------------------------ renamed arguments


def test_renamed_arguments_warn_and_forward(tmp_path):
    from companion import shop
    from companion.data import preprocessing
    from companion.recsys import baselines as rec
    from companion.recsys import twostage

    def old_and_new(call_old, call_new, read):
        with pytest.warns(DeprecationWarning, match="renamed"):
            old = call_old()
        assert read(old) == read(call_new())

    old_and_new(lambda: rec.TIFUKNN(k=7), lambda: rec.TIFUKNN(neighbours=7),
                lambda m: repr(m))
    assert "k=" not in repr(rec.TIFUKNN(neighbours=7))
    old_and_new(lambda: twostage.TwoStageRecommender(label_days=14),
                lambda: twostage.TwoStageRecommender(horizon_days=14), lambda m: repr(m))
    frame = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": ["a", "b", "a", "c"],
                          "timestamp": pd.to_datetime(["2011-01-01", "2011-02-01",
                                                       "2011-01-15", "2011-03-01"])})
    old_and_new(lambda: preprocessing.split_by_time(frame, test_start="2011-02-01"),
                lambda: preprocessing.split_by_time(frame, cutoff="2011-02-01"),
                lambda s: (len(s.train), len(s.test)))
    shop_frame = frame.assign(invoice=["1", "2", "3", "4"], value=[1.0, 2.0, 3.0, 4.0])
    old_and_new(lambda: shop.churn_risk(shop_frame, as_of="2011-03-02"),
                lambda: shop.churn_risk(shop_frame, cutoff="2011-03-02"),
                lambda f: f.to_json())
    with pytest.raises(TypeError, match="pass neighbours only"):
        rec.TIFUKNN(neighbours=5, k=7)
    with pytest.raises(TypeError, match="needs cutoff"):
        preprocessing.split_by_time(frame)
    with pytest.raises(TypeError, match="needs horizon_days"):
        twostage.training_examples(frame, "2011-02-01")
