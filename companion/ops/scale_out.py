"""Chapter 7.2's check of the two engines: the pandas and Spark paths on the same shop.

:func:`compare_engines` times both paths of :mod:`companion.ops.spark` on the raw lines
scaled to each size, and compares their full outputs at one size, table by table. It
returns plain data, so that :func:`companion.cache.memoise` can store it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import pandas as pd

from companion.ops import spark as cs


def compare_engines(raw: pd.DataFrame, sizes: Sequence[float], *, tables_at: float = 1,
                    spark: Any = None, app_name: str = "book-7.2") -> dict[str, Any]:
    """Time the pandas and Spark pipelines and compare their outputs.

    Both paths of :func:`companion.ops.spark.time_pipelines` (its default
    :data:`companion.ops.spark.PIPELINE` settings) run on ``raw`` scaled to each of
    ``sizes``, in a temporary folder that is removed afterwards; at the size ``tables_at``
    their full outputs are kept and compared.

    Parameters
    ----------
    raw
        The raw order lines, as loaded (Online Retail columns).
    sizes
        Multiples of the shop to time (:func:`companion.ops.spark.scale_shop`).
    tables_at
        The size, one of ``sizes``, whose outputs are compared.
    spark
        A running Spark session to use; by default one is started
        (:func:`companion.ops.spark.spark_session`, named ``app_name``) and stopped at
        the end.
    app_name
        Name of the session started when ``spark`` is None.

    Returns
    -------
    dict
        ``timing`` (the table of :func:`companion.ops.spark.time_pipelines`), ``checks``
        (:func:`companion.ops.spark.compare_paths`), ``means``
        (:func:`companion.ops.spark.metric_means`), ``report`` (the cleaning reports of
        both paths side by side, columns suffixed " pandas" and " Spark") and
        ``features`` (the pandas path's churn features and labels).
    """
    if not isinstance(raw, pd.DataFrame):
        raise TypeError(f"raw must be a pandas DataFrame, got {type(raw).__name__}.")
    sizes = list(sizes)
    if tables_at not in sizes:
        raise ValueError(f"tables_at={tables_at} must be one of sizes {sizes}.")
    session = cs.spark_session(app_name) if spark is None else nullcontext(spark)
    with session as spark, tempfile.TemporaryDirectory() as folder:
        timing, kept = cs.time_pipelines(raw, sizes, spark, folder,
                                         tables_at=tables_at, progress=False)
    pandas_out, spark_out = kept["pandas"], kept["spark"]
    return {"timing": timing,
            "checks": cs.compare_paths(pandas_out, spark_out),
            "means": cs.metric_means(pandas_out, spark_out),
            "report": pandas_out["report"].merge(
                spark_out["report"], on=["rule", "description"],
                suffixes=(" pandas", " Spark")),
            "features": pandas_out["features"]}
