"""Data: the real UCI files, the synthetic shop, and turning orders into interactions.

Its modules:

schema
    Column schemas of the three UCI data sets, and their attribution.
sources
    Loading the real data: local folders, the user cache, verified downloads, and
    :func:`load_shop` with its visible fallback to the synthetic shop.
synthetic
    A seeded synthetic shop with the same schema, and its hidden truth.
preprocessing
    Cleaning rules, the interactions table, id encoders and leakage-free splits.

The names of ``schema``, ``sources`` and ``synthetic`` are also available here, so that
``from companion import data; data.load_online_retail()`` reads as before.
"""

from companion.data.schema import (
    ATTRIBUTION,
    I_TO_II,
    OVERLAP_START,
    RETAIL_I_SCHEMA,
    RETAIL_II_SCHEMA,
    RETAIL_NULLABLE,
    SHOPPERS_SCHEMA,
)
from companion.data.sources import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DATASETS,
    RemoteFile,
    ShopData,
    cache_dir,
    candidate_dirs,
    download_dataset,
    load_online_retail,
    load_online_shoppers,
    load_shop,
    locate,
    verify_frame,
)
from companion.data.synthetic import SyntheticTruth, synthetic_shop

__all__ = [
    "ATTRIBUTION", "CACHE_DIR_ENV", "DATASETS", "DATA_DIR_ENV", "I_TO_II", "OVERLAP_START",
    "RETAIL_II_SCHEMA", "RETAIL_I_SCHEMA", "RETAIL_NULLABLE", "SHOPPERS_SCHEMA",
    "RemoteFile", "ShopData", "SyntheticTruth", "cache_dir", "candidate_dirs",
    "download_dataset", "load_online_retail", "load_online_shoppers", "load_shop", "locate",
    "synthetic_shop", "verify_frame",
]
