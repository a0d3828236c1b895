"""Companion package of the book *Deep and large models for e-commerce retention*.

Modules
-------
data
    Loading the real UCI data (with download and verification) and the synthetic shop.
preprocessing
    Cleaning rules, the interactions table, id encoders and leakage-free splits.
behaviour
    Monthly activity, repeat purchase and cohort retention.
plotting
    Figures shared by the chapters.

The book's API reference page lists every module. A shop can run the pipeline on its own
order export without writing code: ``python -m companion --help`` (:mod:`companion.cli`).
"""

__version__ = "0.1.0"

#: Seed used by the book wherever randomness enters.
SEED = 42
