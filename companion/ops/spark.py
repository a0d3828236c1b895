"""The book's pipeline on Apache Spark: the same tables and metrics as the pandas path.

For a shop whose order lines no longer fit one machine's memory, this module runs the
steps of chapters 3, 5 and 6 as Spark SQL on PySpark DataFrames:

* :func:`clean_transactions` applies the rules of
  :func:`companion.data.preprocessing.clean_transactions`, in the same order and with the same
  report;
* :func:`to_interactions` builds the interactions table of
  :func:`companion.data.preprocessing.to_interactions`;
* :func:`split_by_time` and :func:`last_days_split` cut it at one instant, as
  :func:`companion.data.preprocessing.split_by_time` does;
* :func:`rfm_features`, :func:`churn_features` and :func:`churn_labels` match
  :func:`companion.retention.behaviour.rfm_features`,
  :func:`companion.retention.churn.churn_features` and
  :func:`companion.retention.churn.churn_labels`;
* :func:`popularity_top_k` and :func:`repeat_buy_top_k` rank like
  :class:`companion.recsys.baselines.Popularity` and :class:`~companion.recsys.baselines.RepeatBuy`,
  and :func:`ranking_metrics` computes the per-user Recall, NDCG and HitRate of
  :func:`companion.recsys.ranking.metrics_from_hits` inside Spark.

PySpark is imported inside the functions, so ``import companion.ops.spark`` works without it.
Spark needs a Java runtime (17 or newer for PySpark 4); :func:`java_version` says whether
one is there. :func:`spark_session` starts a local session bound to 127.0.0.1 with the web
UI off and stops it on exit. Times are handled in UTC, so the naive timestamps of the data
mean the same instant in pandas and in Spark.

**Why one module.** It is the Spark counterpart of the pandas path, function for function
(each is tested against the pandas function it mirrors), and it keeps PySpark's imports,
session and time-zone handling in one place.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from companion._checks import check_positive_int, check_timestamp
from companion._compat import moved_names, renamed_argument
from companion._optional import require
from companion.data.preprocessing import CANONICAL, NON_PRODUCT_CODES, NON_PRODUCT_PATTERN

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

#: Online Retail (I) column names and their Online Retail II equivalents
_I_TO_II = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}
_TEXT = ("invoice", "stock_code", "description", "country")
_DAY = 86400.0


# ------------------------------------------------------------------------------- session


def java_version() -> str | None:
    """The first line of ``java -version``, or None when no Java runtime is on the PATH."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def java_major(version_line: str | None) -> int | None:
    """The major version in a ``java -version`` line (``"17.0.15"`` -> 17, ``"1.8"`` -> 8)."""
    if not version_line:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_line)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@contextmanager
def spark_session(app_name: str = "companion", *, cores: int = 2, shuffle_partitions: int = 4,
                  driver_memory: str = "2g", quick_jit: bool = True) -> Iterator[SparkSession]:
    """A local Spark session (``local[cores]``) for the length of a ``with`` block.

    The driver binds to 127.0.0.1, the web UI is off, shuffles use ``shuffle_partitions``
    partitions (the default 200 is meant for clusters), the SQL time zone is UTC and Arrow
    moves frames between pandas and Spark. The session is stopped on exit, even after an
    error. With ``quick_jit`` the JVM compiles with its fast C1 compiler only
    (``-XX:TieredStopAtLevel=1``): on short local jobs the optimising C2 compiler spends
    more CPU compiling than it saves. Raises RuntimeError when Java is missing or older
    than 17.
    """
    check_positive_int(cores, name="cores")
    check_positive_int(shuffle_partitions, name="shuffle_partitions")
    line = java_version()
    if line is None:
        raise RuntimeError("Spark needs a Java runtime and `java` is not on the PATH; install "
                           "one, e.g. `apt-get install openjdk-17-jre-headless`.")
    major = java_major(line)
    if major is not None and major < 17:
        raise RuntimeError(f"PySpark 4 needs Java 17 or newer; found {line!r}.")
    SparkSession = require("pyspark.sql", "spark").SparkSession

    java_options = "-Duser.timezone=UTC" + (" -XX:TieredStopAtLevel=1" if quick_jit else "")
    spark = (
        SparkSession.builder.master(f"local[{cores}]").appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(cores))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.driver.memory", driver_memory)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def from_pandas(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """A Spark DataFrame with the rows of ``frame`` (naive timestamps are read as UTC)."""
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise ValueError("from_pandas needs a non-empty pandas DataFrame.")
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.StringDtype) or out[col].dtype == object:
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySpark's notes on pandas 3 support
        return spark.createDataFrame(out)


def to_pandas(frame: DataFrame, sort_by: list[str] | None = None) -> pd.DataFrame:
    """Collect a Spark DataFrame into pandas, sorted by ``sort_by`` (Spark keeps no order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySpark's notes on pandas 3 support
        out = frame.toPandas()
    if sort_by:
        out = out.sort_values(sort_by, kind="stable").reset_index(drop=True)
    return out


def _require(frame: DataFrame, columns: list[str] | tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {frame.columns}.")


def _epoch(col: str | Column) -> Column:
    """Seconds since 1970 of a timestamp column (UTC)."""
    from pyspark.sql import functions as F

    return F.unix_timestamp(F.col(col) if isinstance(col, str) else col)


def _seconds(stamp: object, name: str) -> int:
    """Seconds since 1970 of a naive timestamp read as UTC."""
    return int(check_timestamp(stamp, name=name).value // 10**9)


# ------------------------------------------------------------------------------ cleaning


def standardise_columns(raw: DataFrame) -> DataFrame:
    """Rename raw lines (Online Retail I or II names) to snake case and fix the types.

    Raises a ValueError naming the missing columns.
    """
    from pyspark.sql import functions as F

    renamed = raw
    if "InvoiceNo" in raw.columns:
        for old, new in _I_TO_II.items():
            if old in raw.columns:
                renamed = renamed.withColumnRenamed(old, new)
    _require(renamed, list(CANONICAL), "transactions")
    types = {"invoice": "string", "stock_code": "string", "description": "string",
             "quantity": "long", "invoice_date": "timestamp", "price": "double",
             "customer_id": "double", "country": "string"}
    return renamed.select(*[F.col(f"`{old}`").cast(types[new]).alias(new)
                            for old, new in CANONICAL.items()])


def is_product_code(code: Column) -> Column:
    """True where a stock code names a real product (missing codes count as products)."""
    from pyspark.sql import functions as F

    named = F.upper(code).isin(sorted(NON_PRODUCT_CODES))
    voucher = code.rlike("(?i)" + NON_PRODUCT_PATTERN.pattern)
    return ~F.coalesce(named | voucher, F.lit(False))


@dataclass
class SparkClean:
    """What :func:`clean_transactions` returns: Spark frames and a pandas report."""

    transactions: DataFrame
    returns: DataFrame
    report: pd.DataFrame


def clean_transactions(raw: DataFrame) -> SparkClean:
    """The cleaning rules of :func:`companion.data.preprocessing.clean_transactions` in Spark.

    Same rules, same order, same report (rows removed, modified and remaining per rule);
    the clean lines and the returns are the same rows, and ``customer_id`` is a long. The
    frames come back cached, since every later step reads them.
    """
    from pyspark.sql import functions as F

    frame = standardise_columns(raw)
    stripped = {c: F.regexp_replace(F.col(c), r"(?U)^\s+|\s+$", "") for c in _TEXT}
    changed = F.lit(False)
    for c in _TEXT:
        changed = changed | F.coalesce(stripped[c] != F.col(c), F.lit(False))
    cancelled = F.upper(F.col("invoice")).startswith("C")
    non_positive = (F.col("quantity") <= 0) | (F.col("price") <= 0)
    flagged = frame.select(
        *[stripped[c].alias(c) if c in stripped else F.col(c) for c in CANONICAL.values()],
        changed.alias("_changed"),
    ).select("*",
             F.col("customer_id").isNull().alias("_missing"),
             F.coalesce(cancelled, F.lit(False)).alias("_cancelled"),
             F.coalesce(non_positive, F.lit(False)).alias("_non_positive"),
             (~is_product_code(F.col("stock_code"))).alias("_non_product")).cache()

    # rules 1-5 in one pass: each rule counts the rows that survived the earlier ones
    alive = ~F.col("_missing")
    counts = flagged.agg(
        F.count(F.lit(1)).alias("input"),
        F.sum(F.col("_changed").cast("long")).alias("modified"),
        F.sum(F.col("_missing").cast("long")).alias("missing_customer"),
        F.sum((alive & F.col("_cancelled")).cast("long")).alias("cancellations"),
        F.sum((alive & ~F.col("_cancelled") & F.col("_non_positive")).cast("long"))
        .alias("non_positive"),
        F.sum((alive & ~F.col("_cancelled") & ~F.col("_non_positive")
               & F.col("_non_product")).cast("long")).alias("non_product"),
    ).first().asDict()
    counts = {k: int(v or 0) for k, v in counts.items()}
    columns = list(CANONICAL.values())
    kept = flagged.where(alive & ~F.col("_cancelled") & ~F.col("_non_positive")
                         & ~F.col("_non_product")).select(*columns)
    transactions = kept.dropDuplicates(columns).withColumn(
        "customer_id", F.col("customer_id").cast("long")).cache()
    n_clean = transactions.count()
    returns = (flagged.where(alive & F.col("_cancelled") & ~F.col("_non_product"))
               .select(*columns).dropDuplicates(columns)
               .withColumn("customer_id", F.col("customer_id").cast("long")).cache())
    returns.count()
    flagged.unpersist()

    rows = [("input", "rows read", 0, 0, counts["input"]),
            ("strip_whitespace", "trim leading and trailing spaces in text", 0,
             counts["modified"], counts["input"])]
    remaining = counts["input"]
    descriptions = {
        "missing_customer": "no customer id",
        "cancellations": "cancellation (C) invoices, set aside as returns",
        "non_positive": "quantity <= 0 or price <= 0",
        "non_product": "postage, fees, adjustments, vouchers and other non-product codes",
    }
    for rule, text in descriptions.items():
        remaining -= counts[rule]
        rows.append((rule, text, counts[rule], 0, remaining))
    rows.append(("duplicates", "exact duplicate lines", remaining - n_clean, 0, n_clean))
    report = pd.DataFrame(
        rows, columns=["rule", "description", "rows_removed", "rows_modified", "rows_remaining"])
    return SparkClean(transactions, returns, report)


def to_interactions(transactions: DataFrame) -> DataFrame:
    """One row per (invoice, customer, item, time) with summed quantity and value.

    The columns of :func:`companion.data.preprocessing.to_interactions`: ``user_id``,
    ``item_id``, ``timestamp``, ``invoice``, ``quantity`` and ``value``.
    """
    from pyspark.sql import functions as F

    _require(transactions, ["invoice", "customer_id", "stock_code", "invoice_date",
                            "quantity", "price"], "transactions")
    return (
        transactions.groupBy("invoice", "customer_id", "stock_code", "invoice_date")
        .agg(F.sum("quantity").alias("quantity"),
             F.sum(F.col("quantity") * F.col("price")).alias("value"))
        .select(F.col("customer_id").alias("user_id"), F.col("stock_code").alias("item_id"),
                F.col("invoice_date").alias("timestamp"), "invoice", "quantity", "value")
    )


# ------------------------------------------------------------------------------- splits


@dataclass
class SparkSplit:
    """Train, validation and test parts (Spark frames) and how they were cut."""

    train: DataFrame
    validation: DataFrame
    test: DataFrame
    description: str


def _span(interactions: DataFrame) -> tuple[int, int]:
    from pyspark.sql import functions as F

    row = interactions.agg(F.min(_epoch("timestamp")).alias("a"),
                           F.max(_epoch("timestamp")).alias("b")).first()
    if row["a"] is None:
        raise ValueError("interactions is empty.")
    return int(row["a"]), int(row["b"])


def _date(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s")


def split_by_time(interactions: DataFrame, cutoff: object = None, *,
                  validation_days: int | None = None, test_days: int | None = None,
                  span: tuple[int, int] | None = None,
                  test_start: object = None) -> SparkSplit:
    """The global time split of :func:`companion.data.preprocessing.split_by_time`.

    ``span`` (first and last timestamp in epoch seconds) may be passed to save a pass
    over the data. ``test_start`` is the old name of ``cutoff`` (it works for one
    release, with a warning).
    """

    cutoff = renamed_argument("split_by_time", "test_start", "cutoff", test_start, cutoff,
                              required=True)
    _require(interactions, ["user_id", "item_id", "timestamp"], "interactions")
    cut = _seconds(cutoff, "cutoff")
    first, last = span if span is not None else _span(interactions)
    if not first < cut <= last:
        raise ValueError(f"cutoff={_date(cut)} is outside the data, which runs from "
                         f"{_date(first)} to {_date(last)}.")
    val_start = cut
    if validation_days is not None:
        val_start = cut - check_positive_int(validation_days, name="validation_days") * 86400
        if val_start <= first:
            raise ValueError(f"validation_days={validation_days} puts the validation start "
                             f"{_date(val_start)} before the first interaction {_date(first)}.")
    t = _epoch("timestamp")
    test = t >= cut
    if test_days is not None:
        test = test & (t < cut + check_positive_int(test_days, name="test_days") * 86400)
    desc = f"global time split: test from {_date(cut).date()}"
    if validation_days:
        desc += f", validation from {_date(val_start).date()}"
    return SparkSplit(interactions.where(t < val_start),
                      interactions.where((t >= val_start) & (t < cut)),
                      interactions.where(test), desc)


def last_days_split(interactions: DataFrame, window_days: int = 30) -> SparkSplit:
    """Test on the last ``window_days`` days, validate on as many before them
    (:func:`companion.recsys.experiments.last_days_split`)."""
    check_positive_int(window_days, name="window_days")
    first, last = _span(interactions)
    end = _date(last).normalize() + pd.Timedelta(days=1)
    return split_by_time(interactions, end - pd.Timedelta(days=window_days),
                         validation_days=window_days, span=(first, last))


# ----------------------------------------------------------------------- RFM and churn


def rfm_features(interactions: DataFrame, cutoff: object) -> DataFrame:
    """Recency, frequency, monetary value, tenure and distinct items before ``cutoff``,
    one row per customer (:func:`companion.retention.behaviour.rfm_features`)."""
    from pyspark.sql import functions as F

    _require(interactions, ["user_id", "item_id", "timestamp", "invoice", "value"],
             "interactions")
    cut = _seconds(cutoff, "cutoff")
    t = _epoch("timestamp")
    return (interactions.where(t < cut).groupBy("user_id").agg(
        ((F.lit(cut) - F.max(t)) / _DAY).alias("recency_days"),
        F.countDistinct("invoice").alias("frequency"),
        F.sum("value").alias("monetary"),
        ((F.lit(cut) - F.min(t)) / _DAY).alias("tenure_days"),
        F.countDistinct("item_id").alias("items"),
    ))


def _check_window(span: tuple[int, int], cut: int, horizon_days: int | None) -> None:
    first, last = span
    if not first < cut <= last:
        raise ValueError(f"cutoff={_date(cut).date()} is outside the data, which runs from "
                         f"{_date(first).date()} to {_date(last).date()}.")
    if horizon_days is not None:
        end = cut + check_positive_int(horizon_days, name="horizon_days") * 86400
        day_after = _date(last).normalize() + pd.Timedelta(days=1)
        if _date(end) > day_after:
            raise ValueError(f"horizon_days={horizon_days} is too long for cutoff="
                             f"{_date(cut).date()}: the data end on {_date(last).date()}.")


def active_customers(interactions: DataFrame, cutoff: object, active_days: int = 365
                     ) -> DataFrame:
    """Customers (column ``user_id``) with a purchase in ``[cutoff - active_days, cutoff)``."""
    cut = _seconds(cutoff, "cutoff")
    check_positive_int(active_days, name="active_days")
    t = _epoch("timestamp")
    return (interactions.where((t < cut) & (t >= cut - active_days * 86400))
            .select("user_id").distinct())


def churn_labels(interactions: DataFrame, cutoff: object, horizon_days: int = 90,
                 active_days: int = 365, *, span: tuple[int, int] | None = None) -> DataFrame:
    """``user_id`` and ``churned`` (1 if an active customer buys nothing in the horizon),
    as :func:`companion.retention.churn.churn_labels`."""
    from pyspark.sql import functions as F

    cut = _seconds(cutoff, "cutoff")
    _check_window(span or _span(interactions), cut, horizon_days)
    t = _epoch("timestamp")
    end = cut + horizon_days * 86400
    future = (interactions.where((t >= cut) & (t < end)).select("user_id").distinct()
              .withColumn("_back", F.lit(1)))
    return (active_customers(interactions, cutoff, active_days).join(future, "user_id", "left")
            .select("user_id", F.when(F.col("_back").isNull(), 1).otherwise(0)
                    .cast("byte").alias("churned")))


def churn_features(interactions: DataFrame, cutoff: object, *, active_days: int = 365,
                   returns: DataFrame | None = None,
                   span: tuple[int, int] | None = None) -> DataFrame:
    """The features of :func:`companion.retention.churn.churn_features` for every active customer.

    ``returns`` are the set-aside cancellation lines of :func:`clean_transactions`; with
    them the frame gains ``return_lines`` and ``return_share``.
    """
    from pyspark.sql import functions as F

    cut = _seconds(cutoff, "cutoff")
    span = span or _span(interactions)
    _check_window(span, cut, None)
    t = _epoch("timestamp")
    active = active_customers(interactions, cutoff, active_days)
    recent = (interactions.where((t < cut) & (t >= cut - 90 * 86400)).groupBy("user_id")
              .agg(F.countDistinct("invoice").alias("invoices_90d"),
                   F.sum("value").alias("spend_90d")))
    out = (active.join(rfm_features(interactions, cutoff), "user_id", "left")
           .join(recent, "user_id", "left")
           .withColumn("days_per_invoice", F.col("tenure_days") / F.col("frequency"))
           .withColumn("overdue", F.col("recency_days") / F.col("days_per_invoice"))
           .withColumn("invoices_90d", F.coalesce("invoices_90d", F.lit(0)))
           .withColumn("spend_90d", F.coalesce("spend_90d", F.lit(0.0)))
           .withColumn("basket_value", F.col("monetary") / F.col("frequency"))
           .withColumn("history_days", F.lit((cut - span[0]) / _DAY)))
    columns = ["recency_days", "frequency", "monetary", "tenure_days", "items",
               "days_per_invoice", "overdue", "invoices_90d", "spend_90d", "basket_value",
               "history_days"]
    if returns is not None:
        _require(returns, ["customer_id", "invoice_date", "quantity", "price"], "returns")
        ret = (returns.where(_epoch("invoice_date") < cut).groupBy("customer_id")
               .agg(F.count(F.lit(1)).alias("return_lines"),
                    F.sum(F.abs("quantity") * F.col("price")).alias("_returned"))
               .withColumnRenamed("customer_id", "user_id"))
        out = (out.join(ret, "user_id", "left")
               .withColumn("return_lines", F.coalesce("return_lines", F.lit(0)))
               .withColumn("return_share", F.coalesce("_returned", F.lit(0.0))
                           / F.greatest(F.col("monetary"), F.lit(1e-9))))
        columns += ["return_lines", "return_share"]
    return out.select("user_id", *[F.col(c).cast("double").alias(c) for c in columns])


# --------------------------------------------------------------------------- recommending


def _popularity(train: DataFrame) -> DataFrame:
    """``item_id`` and ``buyers`` (distinct customers) in ``train``."""
    from pyspark.sql import functions as F

    return train.groupBy("item_id").agg(F.countDistinct("user_id").alias("buyers"))


def popularity_top_k(train: DataFrame, users: DataFrame, k: int = 10) -> DataFrame:
    """The ``k`` items most customers bought, for every user in ``users``.

    Ranked like :class:`companion.recsys.baselines.Popularity`: by distinct buyers, ties by
    item id. Columns ``user_id``, ``item_id`` and ``rank`` (1 = best).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_positive_int(k, name="k")
    order = Window.orderBy(F.desc("buyers"), F.asc("item_id"))
    top = (_popularity(train).withColumn("rank", F.row_number().over(order))
           .where(F.col("rank") <= k).select("item_id", "rank"))
    return users.select("user_id").distinct().crossJoin(F.broadcast(top))


def repeat_buy_top_k(train: DataFrame, users: DataFrame, k: int = 10, *,
                     half_life_days: float = 90.0) -> DataFrame:
    """A customer's own items by decayed purchase count, then the most popular items.

    The score of :class:`companion.recsys.baselines.RepeatBuy`: each purchase weighs
    ``0.5 ** (age / half_life_days)`` (age from the last training day), summed per item,
    plus ``1e-6 * buyers / max buyers`` to break ties; items never bought by the customer
    follow by popularity. Columns ``user_id``, ``item_id``, ``rank``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_positive_int(k, name="k")
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}.")
    t = _epoch("timestamp")
    last = train.agg(F.max(t).alias("m")).first()["m"]
    pop = _popularity(train).cache()
    top_buyers = pop.agg(F.max("buyers").alias("m")).first()["m"]
    tie = F.lit(1e-6) * F.col("buyers") / F.lit(float(top_buyers))
    wanted = users.select("user_id").distinct()
    own = (train.join(F.broadcast(wanted), "user_id")
           .groupBy("user_id", "item_id")
           .agg(F.sum(F.pow(F.lit(0.5), (F.lit(last) - t) / _DAY / half_life_days))
                .alias("weight")))
    popular = (pop.withColumn("r", F.row_number().over(
        Window.orderBy(F.desc("buyers"), F.asc("item_id")))).where(F.col("r") <= k)
        .select("item_id"))
    fill = (wanted.crossJoin(F.broadcast(popular)).join(own, ["user_id", "item_id"], "left_anti")
            .withColumn("weight", F.lit(0.0)))
    scored = own.unionByName(fill).join(F.broadcast(pop), "item_id").withColumn(
        "score", F.col("weight") + tie)
    order = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    return (scored.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)
            .select("user_id", "item_id", "rank"))


def window_truth(train: DataFrame, window: DataFrame) -> DataFrame:
    """Distinct (``user_id``, ``item_id``) bought in ``window`` by customers seen in
    ``train``: the "all" task of :class:`companion.recsys.ranking.RankingTask`."""
    known = train.select("user_id").distinct()
    return window.select("user_id", "item_id").distinct().join(known, "user_id")


def ranking_metrics(top_k: DataFrame, truth: DataFrame, k: int = 10) -> DataFrame:
    """Per-user ``Recall``, ``NDCG`` and ``HitRate`` at ``k`` with binary gains.

    The definitions of :func:`companion.recsys.ranking.metrics_from_hits`, computed in Spark:
    one row per user of ``truth``.
    """
    from pyspark.sql import functions as F

    check_positive_int(k, name="k")
    spark = truth.sparkSession
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal_frame = spark.createDataFrame(
        [(i + 1, float(v)) for i, v in enumerate(ideal)], "n long, idcg double")
    relevant = truth.groupBy("user_id").agg(F.count(F.lit(1)).alias("relevant"))
    hits = (top_k.where(F.col("rank") <= k).join(truth, ["user_id", "item_id"])
            .groupBy("user_id").agg(F.count(F.lit(1)).alias("hits"),
                                    F.sum(1.0 / F.log2(F.col("rank") + 1)).alias("dcg")))
    return (relevant.join(hits, "user_id", "left")
            .withColumn("n", F.least(F.col("relevant"), F.lit(k)).cast("long"))
            .join(F.broadcast(ideal_frame), "n")
            .select("user_id",
                    (F.coalesce("hits", F.lit(0)) / F.col("relevant")).alias("Recall"),
                    (F.coalesce("dcg", F.lit(0.0)) / F.col("idcg")).alias("NDCG"),
                    (F.coalesce("hits", F.lit(0)) > 0).cast("double").alias("HitRate")))


# ---------------------------------------------------------------------------- comparing


def compare_tables(expected: pd.DataFrame, actual: pd.DataFrame, *, keys: list[str],
                   rtol: float = 1e-9, atol: float = 1e-9) -> dict[str, Any]:
    """Compare two tables row by row after sorting both by ``keys``.

    Returns ``rows`` (of each), ``same_rows`` (the keys agree row for row), the largest
    absolute difference over the numeric columns, ``mismatched`` (numeric cells outside
    the tolerance plus non-numeric cells that differ) and ``equal`` (everything agrees).
    Raises a ValueError naming columns that only one table has.
    """
    left_only = sorted(set(expected.columns) - set(actual.columns))
    right_only = sorted(set(actual.columns) - set(expected.columns))
    if left_only or right_only:
        raise ValueError(f"the tables have different columns: only in expected {left_only}, "
                         f"only in actual {right_only}.")
    columns = list(expected.columns)
    a = expected[columns].sort_values(columns if not keys else keys + [c for c in columns
                                                                       if c not in keys],
                                      kind="stable").reset_index(drop=True)
    b = actual[columns].sort_values(columns if not keys else keys + [c for c in columns
                                                                     if c not in keys],
                                    kind="stable").reset_index(drop=True)
    out: dict[str, Any] = {"rows": len(a), "rows_actual": len(b), "max_abs_diff": 0.0,
                           "mismatched": 0}
    if len(a) != len(b):
        out.update(same_rows=False, equal=False)
        return out
    mismatched = 0
    for col in columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            both_nan = np.isnan(xv) & np.isnan(yv)
            diff = np.where(both_nan, 0.0, np.abs(xv - yv))
            if diff.size:
                out["max_abs_diff"] = max(out["max_abs_diff"], float(np.nanmax(diff)))
            close = both_nan | np.isclose(xv, yv, rtol=rtol, atol=atol)
            mismatched += int((~close).sum())
        elif pd.api.types.is_datetime64_any_dtype(x) or pd.api.types.is_datetime64_any_dtype(y):
            mismatched += int((pd.to_datetime(x).to_numpy("datetime64[s]")
                               != pd.to_datetime(y).to_numpy("datetime64[s]")).sum())
        else:
            xs = x.astype(object).where(x.notna(), None).to_numpy()
            ys = y.astype(object).where(y.notna(), None).to_numpy()
            mismatched += int(sum(p != q for p, q in zip(xs, ys, strict=True)))
    key_cols = keys or columns
    same_keys = all(
        (a[c].astype(object).where(a[c].notna(), None).to_numpy()
         == b[c].astype(object).where(b[c].notna(), None).to_numpy()).all()
        if not pd.api.types.is_datetime64_any_dtype(a[c])
        else (pd.to_datetime(a[c]).to_numpy("datetime64[s]")
              == pd.to_datetime(b[c]).to_numpy("datetime64[s]")).all()
        for c in key_cols)
    out.update(same_rows=bool(same_keys), mismatched=mismatched,
               equal=bool(same_keys and mismatched == 0))
    return out


# ---------------------------------------------------------------------- whole pipeline

#: what both pipelines compute: churn features at CUTOFF (labels over HORIZON days), and a
#: top-10 test on the last WINDOW days
PIPELINE = {"cutoff": "2011-09-01", "horizon_days": 90, "window_days": 30, "k": 10}


def pandas_pipeline(raw: pd.DataFrame, *, tables: bool = False, **params: Any
                    ) -> dict[str, Any]:
    """The book's pandas path from raw lines to churn features and recommender metrics.

    Cleaning, interactions, the last-days split, churn features and labels at
    ``cutoff`` (returns included) and the per-user metrics of popularity and repeat-buy
    on the "all" task. ``params`` override :data:`PIPELINE`. With ``tables`` the clean
    lines, returns and interactions are returned too.
    """
    from companion.data import preprocessing
    from companion.recsys import baselines as rec
    from companion.recsys import experiments, ranking
    from companion.retention import churn

    p = {**PIPELINE, **params}
    clean = preprocessing.clean_transactions(raw)
    interactions = preprocessing.to_interactions(clean.transactions)
    split = experiments.last_days_split(interactions, p["window_days"])
    features = churn.churn_features(interactions, p["cutoff"], returns=clean.returns)
    labels = churn.churn_labels(interactions, p["cutoff"], p["horizon_days"])
    task = ranking.RankingTask.from_time_split(split, "test")
    out: dict[str, Any] = {
        "report": clean.report, "interactions_rows": len(interactions),
        "split_rows": {n: len(getattr(split, n)) for n in ("train", "validation", "test")},
        "features": features.join(labels).reset_index(),
    }
    for name, model in (("popularity", rec.Popularity()), ("repeat-buy", rec.RepeatBuy())):
        model.fit(task.train)
        metrics = ranking.evaluate(model, task, k=p["k"], tasks=("all",))["all"]
        out[f"metrics {name}"] = metrics[["Recall", "NDCG", "HitRate"]].reset_index()
        if tables:
            out[f"model {name}"] = model
    out["stamp"] = _stamp(None)
    if tables:
        out.update(transactions=clean.transactions, returns=clean.returns,
                   interactions=interactions, truth=task.truth["all"])
    return out


def spark_pipeline(raw: DataFrame, *, tables: bool = False, **params: Any) -> dict[str, Any]:
    """:func:`pandas_pipeline` in Spark, from a Spark frame of raw lines.

    Returns the same keys, as pandas frames collected from Spark (sorted by user); with
    ``tables`` also the clean lines, returns and interactions, and the recommended lists.
    """
    p = {**PIPELINE, **params}
    clean = clean_transactions(raw)
    interactions = to_interactions(clean.transactions).cache()
    span = _span(interactions)
    n_interactions = interactions.count()
    first, last = span
    end = _date(last).normalize() + pd.Timedelta(days=1)
    split = split_by_time(interactions, end - pd.Timedelta(days=p["window_days"]),
                          validation_days=p["window_days"], span=span)
    features = churn_features(interactions, p["cutoff"], returns=clean.returns, span=span)
    labels = churn_labels(interactions, p["cutoff"], p["horizon_days"], span=span)
    out: dict[str, Any] = {
        "report": clean.report, "interactions_rows": n_interactions,
        "split_rows": {n: getattr(split, n).count() for n in ("train", "validation", "test")},
        "features": to_pandas(features.join(labels, "user_id"), ["user_id"]),
    }
    train = split.train.unionByName(split.validation).cache()
    truth = window_truth(train, split.test).cache()
    for name, ranker in (("popularity", popularity_top_k), ("repeat-buy", repeat_buy_top_k)):
        lists = ranker(train, truth, p["k"]).cache()
        out[f"metrics {name}"] = to_pandas(ranking_metrics(lists, truth, p["k"]), ["user_id"])
        if tables:
            out[f"lists {name}"] = to_pandas(lists, ["user_id", "rank"])
        lists.unpersist()
    out["stamp"] = _stamp(jvm_pid(raw.sparkSession))
    if tables:
        out.update(transactions=to_pandas(clean.transactions),
                   returns=to_pandas(clean.returns), interactions=to_pandas(interactions))
    for frame in (train, truth, interactions, clean.transactions, clean.returns):
        frame.unpersist()
    return out


def tie_consistent(model: Any, lists: pd.DataFrame, *, rtol: float = 1e-6) -> np.ndarray:
    """Whether each user's list is a top-k ranking of a fitted pandas model's scores.

    ``lists`` has columns ``user_id``, ``item_id`` and ``rank`` (as from
    :func:`repeat_buy_top_k`). A list passes when the model's scores of its items do not
    increase down the list and its last item scores at least as high as every item left
    out, both within ``rtol`` (the pandas models score in float32, Spark in float64). Two
    lists that pass differ only in how they order items with tied scores. Returns one
    boolean per user, in sorted user order.
    """
    wide = lists.pivot(index="user_id", columns="rank", values="item_id").sort_index()
    if wide.isna().any().any():
        raise ValueError("every user in lists needs ranks 1..k without gaps.")
    items = pd.Index(model.items_)
    codes = items.get_indexer(wide.to_numpy().ravel()).reshape(wide.shape)
    if (codes < 0).any():
        raise ValueError("lists recommend items the model does not know.")
    out = np.empty(len(wide), dtype=bool)
    users = wide.index.to_numpy()
    for lo in range(0, len(users), 512):
        scores = model.score(users[lo:lo + 512]).astype(np.float64)
        part = codes[lo:lo + 512]
        chosen = np.take_along_axis(scores, part, axis=1)
        tol = rtol * np.maximum(1.0, np.abs(scores).max(axis=1, keepdims=True))
        ordered = (np.diff(chosen, axis=1) <= tol).all(axis=1)
        rest = scores.copy()
        np.put_along_axis(rest, part, -np.inf, axis=1)
        out[lo:lo + 512] = ordered & (chosen[:, -1] >= rest.max(axis=1) - tol[:, 0])
    return out


def replicate_customers(raw: pd.DataFrame, times: int) -> pd.DataFrame:
    """The raw lines ``times`` times over, each copy's customers under new ids.

    Copy ``r`` (from 0) adds ``r * 10**6`` to the customer id and ``-r`` to the invoice
    number (a cancellation keeps its leading ``C``), so the copies are distinct customers
    with the same behaviour: a shop ``times`` times as large. Lines without a customer
    stay anonymous. Works on either Online Retail schema.
    """
    times = check_positive_int(times, name="times")
    old = "InvoiceNo" in raw.columns
    id_column, invoice_column = ("CustomerID", "InvoiceNo") if old else ("Customer ID", "Invoice")
    for col in (id_column, invoice_column):
        if col not in raw.columns:
            raise ValueError(f"raw is missing column {col!r}.")
    parts = []
    for r in range(times):
        part = raw.copy() if r else raw
        if r:
            part[id_column] = part[id_column] + r * 10**6
            part[invoice_column] = part[invoice_column].astype("string") + f"-{r}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------ timing


def _cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU seconds of a process (this one by default; Linux /proc)."""
    import os

    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _stamp(pid: int | None) -> tuple[float, float]:
    """Wall clock and CPU seconds so far (this process plus the JVM ``pid``, if any)."""
    import time

    return time.perf_counter(), _cpu_seconds() + (_cpu_seconds(pid) if pid else 0.0)


def scale_shop(raw: pd.DataFrame, size: float) -> pd.DataFrame:
    """The raw lines of a shop ``size`` times as large: whole numbers replicate the
    customers (:func:`replicate_customers`), fractions below 1 keep every line of about
    that share of the customers (those whose id falls in the share; anonymous lines
    likewise by position)."""
    if size >= 1:
        if size != int(size):
            raise ValueError(f"sizes of 1 or more must be whole numbers, got {size}.")
        return replicate_customers(raw, int(size))
    if not 0 < size < 1:
        raise ValueError(f"size must be positive, got {size}.")
    ids = raw["CustomerID" if "CustomerID" in raw.columns else "Customer ID"]
    slot = np.where(ids.isna(), np.arange(len(raw)) % 1000, (ids.fillna(0) * 7919) % 1000)
    return raw[slot < size * 1000].reset_index(drop=True)


def jvm_pid(spark: SparkSession) -> int | None:
    """The process id of the session's JVM (the driver, which runs local executors)."""
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # noqa: BLE001 - a remote or unusual JVM: no CPU figure
        return None


def time_pipelines(raw: pd.DataFrame, sizes: list[float], spark: SparkSession, folder: str,
                   *, progress: bool = True, tables_at: float | None = None,
                   on_row: Any = None, **params: Any
                   ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Wall and CPU seconds of :func:`pandas_pipeline` and :func:`spark_pipeline` by size.

    For each size the raw lines are scaled (:func:`scale_shop`) and written to parquet in
    ``folder`` (not timed); each path then reads the file and runs the whole pipeline.
    Spark's CPU time is the JVM's plus this Python process's. The table also says whether
    both paths gave the same churn features and evaluated the same customers, and the
    largest gap between their mean NDCG (which comes from the order of tied items only).
    Returns the table and, for the size ``tables_at``, both paths' full results (with
    ``tables=True``; collecting the tables is not timed). ``on_row`` is called with each
    row as soon as it is measured.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    pid = jvm_pid(spark)
    rows, kept = [], {}
    for times in tqdm(sizes, desc="sizes", disable=not progress):
        path = Path(folder) / f"raw_x{times}.parquet"
        big = scale_shop(raw, times)
        big.to_parquet(path, coerce_timestamps="us", allow_truncated_timestamps=True)
        n_raw = len(big)
        del big
        keep = tables_at is not None and times == tables_at
        start, cpu = _stamp(None)
        expected = pandas_pipeline(pd.read_parquet(path), tables=keep, **params)
        pandas_wall, pandas_cpu = (b - a for a, b in zip((start, cpu), expected["stamp"],
                                                          strict=True))
        start, cpu = _stamp(pid)
        got = spark_pipeline(spark.read.parquet(str(path)), tables=keep, **params)
        spark_wall, spark_cpu = (b - a for a, b in zip((start, cpu), got["stamp"], strict=True))
        if keep:
            kept = {"pandas": expected, "spark": got}
        same = compare_tables(expected["features"], got["features"], keys=["user_id"])["equal"]
        gap = 0.0
        for name in ("popularity", "repeat-buy"):
            a, b = expected[f"metrics {name}"], got[f"metrics {name}"]
            same &= a["user_id"].tolist() == b["user_id"].tolist()
            gap = max(gap, abs(float(a["NDCG"].mean() - b["NDCG"].mean())))
        rows.append({"size": times, "raw rows": n_raw,
                     "interactions": expected["interactions_rows"],
                     "pandas s": pandas_wall, "pandas CPU s": pandas_cpu,
                     "Spark s": spark_wall, "Spark CPU s": spark_cpu,
                     "same features and users": bool(same), "NDCG gap": gap})
        if on_row is not None:
            on_row(rows[-1])
        path.unlink()
    table = pd.DataFrame(rows)
    table["pandas CPU µs/row"] = 1e6 * table["pandas CPU s"] / table["raw rows"]
    table["Spark CPU µs/row"] = 1e6 * table["Spark CPU s"] / table["raw rows"]
    return table, kept


def compare_paths(expected: dict[str, Any], got: dict[str, Any]) -> pd.DataFrame:
    """One row per output of :func:`pandas_pipeline` against :func:`spark_pipeline`.

    Both must have been run with ``tables=True``. Columns: ``rows pandas``, ``rows
    Spark``, ``equal`` (same rows, every value within 1e-9) and ``max abs diff``. For each
    recommender two more rows: the per-user metrics Spark computed against
    :func:`companion.recsys.ranking.metrics_from_hits` on the same lists and the pandas ground
    truth (the metric is the same), and the number of users whose Spark list is a valid
    top-k ranking of the pandas model's own scores (:func:`tie_consistent`; the lists
    differ from the pandas lists at most in how tied items are ordered).
    """
    from companion.recsys import ranking
    inter_keys = ["user_id", "item_id", "timestamp", "invoice"]
    line_keys = list(expected["transactions"].columns)
    checks = {
        "cleaning report": (expected["report"], got["report"], ["rule"]),
        "clean lines": (expected["transactions"], got["transactions"], line_keys),
        "returns": (expected["returns"], got["returns"], line_keys),
        "interactions": (expected["interactions"], got["interactions"], inter_keys),
        "churn features and labels": (expected["features"], got["features"], ["user_id"]),
    }
    truth = expected["truth"]
    for name in ("popularity", "repeat-buy"):
        wide = got[f"lists {name}"].pivot(index="user_id", columns="rank",
                                          values="item_id").reindex(truth.index)
        again = ranking.metrics_from_hits(ranking.hits_matrix(wide.to_numpy(), truth),
                                          truth.map(len).to_numpy())
        again.insert(0, "user_id", truth.index.to_numpy())
        cols = ["user_id", "Recall", "NDCG", "HitRate"]
        checks[f"{name}: Spark's metrics against ranking's formulas"] = (
            again[cols], got[f"metrics {name}"][cols], ["user_id"])
    rows = []
    for name, (a, b, keys) in checks.items():
        result = compare_tables(a, b, keys=keys)
        rows.append({"output": name, "rows pandas": result["rows"],
                     "rows Spark": result["rows_actual"], "equal": result["equal"],
                     "max abs diff": result["max_abs_diff"]})
    for name in ("popularity", "repeat-buy"):
        valid = tie_consistent(expected[f"model {name}"], got[f"lists {name}"])
        rows.append({"output": f"{name}: lists valid for the pandas scores",
                     "rows pandas": len(valid), "rows Spark": int(valid.sum()),
                     "equal": bool(valid.all()), "max abs diff": np.nan})
    return pd.DataFrame(rows).set_index("output")


def metric_means(expected: dict[str, Any], got: dict[str, Any]) -> pd.DataFrame:
    """Mean Recall, NDCG and HitRate at k of each model on each path, and the number of
    users whose NDCG differs (only through tied items, see :func:`compare_paths`)."""
    rows = []
    for name in ("popularity", "repeat-buy"):
        a = expected[f"metrics {name}"].set_index("user_id").sort_index()
        b = got[f"metrics {name}"].set_index("user_id").sort_index()
        for path, frame in (("pandas", a), ("Spark", b)):
            rows.append({"model": name, "path": path, **frame.mean().to_dict(),
                         "users": len(frame)})
        rows[-1]["NDCG differs for"] = int((~np.isclose(a["NDCG"], b["NDCG"],
                                                        rtol=1e-9, atol=1e-12)).sum())
    return pd.DataFrame(rows).set_index(["model", "path"])


# mirrored_fit moved to companion.ops.distributed in 0.2.0 (tf.distribute is not Spark)
__getattr__ = moved_names(__name__, {"mirrored_fit": "companion.ops.distributed"})
