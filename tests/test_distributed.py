"""companion.ops.distributed: input checks, and the old name in companion.ops.spark."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from companion.ops import distributed


def test_mirrored_fit_rejects_bad_input():
    X = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="one row per label"):
        distributed.mirrored_fit(X, np.zeros(9))
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        distributed.mirrored_fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="devices"):
        distributed.mirrored_fit(X, np.zeros(10), devices=0)


def test_the_old_name_in_spark_warns_and_forwards():
    from companion.ops import spark

    with pytest.warns(DeprecationWarning, match="spark.mirrored_fit moved to "
                      "companion.ops.distributed.mirrored_fit") as caught:
        old = spark.mirrored_fit
    assert old is distributed.mirrored_fit
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
            spark.no_such_name  # noqa: B018


def test_trains_on_one_device_and_the_loss_falls():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.float32)
    run = distributed.mirrored_fit(X, y, devices=1, epochs=3, batch_size=64, seed=1)
    assert run["replicas"] == 1
    assert len(run["loss"]) == 3
    assert run["loss"][-1] < run["loss"][0]
