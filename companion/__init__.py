"""Companion package of the book *Deep and large models for e-commerce retention*.

The package is grouped by the parts of the book. Imports point one way only, down this
list: data, then foundations, then recommender systems, retention, applications and
operations; the modules at the top level use them all (``_checks``, ``_optional`` and
``cache`` are used by all of them).

Package tree
------------
data
    schema, sources, synthetic: the real UCI files, verified downloads, the synthetic shop;
    preprocessing: cleaning, the interactions table, id encoders, splits in time.
foundations
    losses, optim, nn (initialisation, early stopping), mlp, metrics, evaluation
    (intervals and paired comparisons), embeddings (skip-gram), keras_helpers.
recsys
    baselines (the recommender protocol and the classical models), deep (Keras models),
    content (cold start and context), content_studies (their studies), twostage,
    ranking (the evaluation protocol), experiments (tuning and seeds), incremental,
    federated.
retention
    behaviour, btyd (BG/NBD), churn, aftersales, simulation, explain.
apps
    ads, bandits (and off-policy evaluation), textgen, supply.
ops
    export, serving, monitoring, compression, spark, scale_out (pandas against Spark),
    automl.
top level
    cli and shop (a shop's own export, end to end), plotting, book (notebook helpers),
    cache (memoised results), _checks (input checks), _optional (the extras),
    _compat (the module names of 0.1.0).

The book's API reference page lists every module. A shop can run the pipeline on its own
order export without writing code: ``python -m companion --help`` (:mod:`companion.cli`).
"""

from companion import _compat

__version__ = "0.2.0"

#: Seed used by the book wherever randomness enters.
SEED = 42

_compat.install()
