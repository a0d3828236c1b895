"""Memoise expensive, deterministic computations on disk between runs of the same code.

A chapter may be executed more than once (by nbval, by a book build that did not get the
chapter handed over from nbval, by a reader re-running it). Training a dozen seeded Keras
models again buys nothing, so chapters wrap such work in :func:`memoise`. It is off
unless the environment variable ``COMPANION_RESULTS_CACHE`` names a folder, and the key of
every entry includes a hash of the whole companion source and of the data, so a change to
either recomputes: a cached result is always the result the current code gives on the
current data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd

T = TypeVar("T")
ENV_VAR = "COMPANION_RESULTS_CACHE"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 over the source of every module of the companion package.

    Computed once per process, when this module is imported, so that it describes the
    code that was loaded even if the files change afterwards.
    """
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(frame: pd.DataFrame) -> str:
    """A hash of a frame's columns, index and values."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"fingerprint expects a DataFrame, got {type(frame).__name__}.")
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def memoise(name: str, key: dict, compute: Callable[[], T]) -> T:
    """Return ``compute()``, reusing a stored result for the same ``name``, ``key`` and code.

    ``key`` must be JSON-serialisable and describe every input of ``compute`` (data
    fingerprints, parameters, seeds). Without ``COMPANION_RESULTS_CACHE`` this is just
    ``compute()``.
    """
    folder = os.environ.get(ENV_VAR)
    if not folder:
        return compute()
    try:
        text = json.dumps({"name": name, "key": key, "code": code_version()}, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"memoise key for {name!r} is not JSON-serialisable: {err}") from None
    path = Path(folder) / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.pkl"
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as fh:
        pickle.dump(result, fh)
    os.replace(fh.name, path)
    return result


code_version()
