"""Save fitted recommenders to disk and load them back, without pickle.

An *artifact* is a folder:

* ``meta.json``: the format number, the model class and its parameters, a description of
  every fitted attribute, and the **version**: the hash of the companion's code
  (:func:`companion.cache.code_version`) and of the training data
  (:func:`companion.cache.fingerprint`), the same keys the results cache uses;
* ``arrays.npz``: every array of the fitted state (dense arrays, the parts of sparse
  matrices, the ids of the id encoders), stored with ``allow_pickle=False`` so that loading
  an artifact can never run code;
* ``model.keras``: for the Keras two-tower model, its network in Keras' native format;
* ``saved_model/``: for :func:`export_serving`, a TensorFlow SavedModel of the scorer (user
  code and context in, a score for every item out), which TensorFlow Serving, TFLite's
  converter or any TensorFlow runtime can load without the companion.

:func:`save` and :func:`load` handle the classical models of chapter 5
(:class:`~companion.recsys.baselines.Popularity`, :class:`~companion.recsys.baselines.RepeatBuy`,
:class:`~companion.recsys.baselines.ItemKNN`, :class:`~companion.recsys.baselines.EASE`, the
next-basket baselines and :class:`~companion.recsys.baselines.Blend` of any of them) and
:class:`~companion.recsys.deep.TwoTower`. TensorFlow is imported only when a Keras artifact is
written or read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion import cache
from companion._optional import require
from companion.data.preprocessing import IdEncoder
from companion.recsys import baselines as rec

FORMAT = 1

#: classes :func:`load` may build (nothing else is ever instantiated from a file)
CLASSICAL = {cls.__name__: cls for cls in (rec.Popularity, rec.RepeatBuy, rec.ItemKNN,
                                           rec.EASE, rec.TIFUKNN, rec.UPCF, rec.Blend)}
KERAS_MODELS = ("TwoTower",)
# fitted attributes of the two-tower model not written to arrays.npz: the network goes to
# model.keras, the vectors are recomputed from it on load (so the check of identical
# recommendations tests the .keras file), the random generator is only used in training
# dense float matrices with at least this many cells and under a third of them nonzero
# are written as their nonzero entries (CSR) and restored as the same dense array
_PACK_MIN = 1 << 16
# fitted attributes that are recomputed on load from the others instead of stored
_DERIVED = {
    "ItemKNN": {"co_": lambda m: (m.binary_.T @ m.binary_).toarray()},  # co-purchases
}
_TWO_TOWER_SKIP = {"model_", "towers_", "rng_", "user_vectors_", "item_vectors_"}


@dataclass
class Artifact:
    """A loaded artifact: the model, its version and where it came from."""

    model: rec.Recommender
    version: dict
    kind: str
    path: Path
    meta: dict = field(repr=False, default_factory=dict)

    @property
    def version_id(self) -> str:
        """Short printable version: ``<class>-<code hash>-<data hash>``."""
        return version_id(self.version)


def model_version(data: pd.DataFrame | str, name: str = "") -> dict:
    """The version of a model trained on ``data`` by this code.

    ``data`` is the training interactions or their :func:`companion.cache.fingerprint`.
    """
    if isinstance(data, pd.DataFrame):
        data = cache.fingerprint(data)
    if not isinstance(data, str) or not data:
        raise TypeError("data must be the training interactions (a DataFrame) or their "
                        f"fingerprint (a non-empty str), got {type(data).__name__}.")
    return {"model": name, "code": cache.code_version(), "data": data,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def version_id(version: dict) -> str:
    """``<model>-<first 8 hex digits of code hash>-<first 8 of data hash>``."""
    return f"{version.get('model', 'model')}-{version['code'][:8]}-{version['data'][:8]}"


# ---------------------------------------------------------------------- state (de)coding


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, key: str, value: np.ndarray) -> dict:
        value = np.asarray(value)
        kind = value.dtype.kind
        if kind == "O":
            if not all(isinstance(v, str) for v in value.ravel()):
                raise TypeError(f"{key}: object arrays are stored only when they hold str.")
            value = value.astype(str)
        elif kind not in "biufcUSM":
            raise TypeError(f"{key}: cannot store an array of dtype {value.dtype}.")
        self.arrays[key] = value
        return {"kind": "array", "key": key, "object": kind == "O"}

    def encode(self, key: str, value: object) -> dict:
        if isinstance(value, rec.Recommender):
            return {"kind": "model", "meta": self.model(key + "/", value)}
        if isinstance(value, IdEncoder):
            classes = value.classes_
            out = self.array(key, classes.to_numpy())
            return {"kind": "encoder", "array": out, "dtype": str(classes.dtype),
                    "handle_unknown": value.handle_unknown}
        if sp.issparse(value):
            m = sp.csr_matrix(value)
            return {"kind": "csr", "shape": list(m.shape),
                    "parts": {p: self.array(f"{key}.{p}", getattr(m, p))
                              for p in ("data", "indices", "indptr")}}
        if isinstance(value, np.ndarray):
            if value.ndim == 2 and value.dtype.kind == "f" and value.size >= _PACK_MIN:
                nonzero = np.count_nonzero(value)
                if nonzero < value.size // 3:  # mostly zeros (e.g. a pruned similarity)
                    return {"kind": "packed", "csr": self.encode(key, sp.csr_matrix(value))}
            return self.array(key, value)
        if isinstance(value, np.generic):
            return {"kind": "value", "value": value.item()}
        if value is None or isinstance(value, bool | int | float | str):
            return {"kind": "value", "value": value}
        if isinstance(value, list | tuple):
            return {"kind": "tuple" if isinstance(value, tuple) else "list",
                    "items": [self.encode(f"{key}.{n}", v) for n, v in enumerate(value)]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            try:  # plain JSON (for example the two-tower's vocabulary)
                return {"kind": "value", "value": json.loads(json.dumps(
                    value, default=lambda v: v.item() if isinstance(v, np.generic) else None))}
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{key}: cannot store a {type(value).__name__} safely.")

    def model(self, prefix: str, model: rec.Recommender) -> dict:
        name = type(model).__name__
        if name not in CLASSICAL and name not in KERAS_MODELS:
            raise TypeError(f"cannot export a {name}; supported: "
                            f"{sorted(CLASSICAL) + list(KERAS_MODELS)}.")
        model._check_fitted()
        params = {}
        for key, value in model.get_params().items():
            if isinstance(value, pd.Series):  # two-tower side data, already encoded
                value = None
            params[key] = self.encode(f"{prefix}params.{key}", value)
        state = {}
        skip = _TWO_TOWER_SKIP if name in KERAS_MODELS else set(_DERIVED.get(name, ()))
        for key, value in vars(model).items():
            if key.startswith("_") or not key.endswith("_") or key in skip:
                continue
            state[key] = self.encode(prefix + key, value)
        derived = sorted(k for k in _DERIVED.get(name, ()) if hasattr(model, k))
        return {"class": name, "params": params, "state": state, "derived": derived}


def _decode(spec: dict, arrays) -> object:
    kind = spec["kind"]
    if kind == "value":
        return spec["value"]
    if kind == "array":
        value = arrays[spec["key"]]
        return value.astype(object) if spec.get("object") else value
    if kind == "encoder":
        encoder = IdEncoder(spec["handle_unknown"])
        encoder.classes_ = pd.Index(_decode(spec["array"], arrays), dtype=spec["dtype"])
        return encoder
    if kind == "packed":  # a dense array stored as its nonzero entries
        return _decode(spec["csr"], arrays).toarray()
    if kind == "csr":
        parts = {p: _decode(s, arrays) for p, s in spec["parts"].items()}
        return sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]),
                             shape=tuple(spec["shape"]))
    if kind in ("list", "tuple"):
        items = [_decode(s, arrays) for s in spec["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "model":
        return _build(spec["meta"], arrays)
    raise ValueError(f"unknown entry kind {kind!r} in the artifact's meta.json.")


def _build(meta: dict, arrays) -> rec.Recommender:
    name = meta["class"]
    if name in CLASSICAL:
        cls = CLASSICAL[name]
    elif name in KERAS_MODELS:
        from companion.recsys import deep

        cls = getattr(deep, name)
    else:
        raise ValueError(f"meta.json names the class {name!r}, which load() does not build; "
                         f"expected one of {sorted(CLASSICAL) + list(KERAS_MODELS)}.")
    model = cls.__new__(cls)
    for key, spec in meta["params"].items():
        setattr(model, key, _decode(spec, arrays))
    for key, spec in meta["state"].items():
        setattr(model, key, _decode(spec, arrays))
    for key in meta.get("derived", ()):
        setattr(model, key, _DERIVED[name][key](model))
    return model


# ------------------------------------------------------------------------- save and load


def _write(path: str | os.PathLike, fill) -> Path:
    """Write an artifact into a temporary sibling folder, then move it into place, so that
    a reader (a service reloading) never sees a half-written artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        fill(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}-old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save(model: rec.Recommender, path: str | os.PathLike, *,
         data: pd.DataFrame | str, name: str | None = None) -> Path:
    """Save a fitted model as an artifact folder at ``path`` (replacing one there).

    ``data`` is the training interactions (or their fingerprint), for the version.
    Classical models are stored as arrays and JSON only; a :class:`~companion.recsys.deep.TwoTower`
    adds its network as ``model.keras``. Returns the path.
    """
    if not isinstance(model, rec.Recommender):
        raise TypeError(f"model must be a fitted Recommender, got {type(model).__name__}.")
    version = model_version(data, name or type(model).__name__)
    writer = _Writer()
    meta_model = writer.model("", model)
    keras_model = type(model).__name__ in KERAS_MODELS
    meta = {"format": FORMAT, "kind": "keras" if keras_model else "classical",
            "version": version, "model": meta_model}

    def fill(folder: Path) -> None:
        np.savez(folder / "arrays.npz", **writer.arrays)
        if keras_model:
            model.model_.save(folder / "model.keras")
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    return _write(path, fill)


def read_meta(path: str | os.PathLike) -> dict:
    """The ``meta.json`` of an artifact, with a clear error when it is not one."""
    path = Path(path)
    file = path / "meta.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a model artifact: it has no meta.json.")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: artifact format {meta.get('format')!r}, this code reads "
                         f"format {FORMAT}.")
    return meta


def load(path: str | os.PathLike) -> Artifact:
    """Load an artifact written by :func:`save` or :func:`export_serving`."""
    path = Path(path)
    meta = read_meta(path)
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        model = _build(meta["model"], arrays)
    if meta["kind"] == "keras":
        keras = require("keras", "deep")

        model.model_ = keras.saving.load_model(path / "model.keras", compile=False)
        model._after_fit()
    elif meta["kind"] == "saved_model":
        model._load(path / "saved_model")
    return Artifact(model, meta["version"], meta["kind"], path, meta)


# ------------------------------------------------------------------ two-tower serving model


def scorer_model(model):
    """A Keras model ``[user code, context code] -> score of every item`` for a fitted
    :class:`~companion.recsys.deep.TwoTower`: its user tower followed by a fixed linear layer that
    holds the item vectors, so the item tower is computed once, at export."""
    keras = require("keras", "deep")

    user_tower, _ = model._towers()
    u = keras.Input(shape=(), dtype="int32", name="user")
    c = keras.Input(shape=(), dtype="int32", name="context")
    items = keras.layers.Dense(model.n_items_, use_bias=False, trainable=False,
                               name="item_vectors")
    scores = items(user_tower([u, c]))
    items.set_weights([np.ascontiguousarray(model.item_vectors_.T)])
    return keras.Model([u, c], scores, name="two_tower_scorer")


class ServingRecommender(rec.Recommender):
    """A two-tower model served from its SavedModel: scores come from the exported
    TensorFlow function, ids, seen items and the popularity fallback from the artifact's
    arrays. Made by :func:`load` on an :func:`export_serving` artifact."""

    def _load(self, folder: Path) -> None:
        tf = require("tensorflow", "deep")

        self.saved_model_ = tf.saved_model.load(str(folder))
        self.serve_ = self.saved_model_.serve

    def _score(self, users):
        tf = require("tensorflow", "deep")

        users = np.asarray(users, dtype=np.int32)
        out = self.serve_([tf.constant(users), tf.constant(self.context_[users])])
        return np.asarray(out, dtype=np.float32)


def export_serving(model, path: str | os.PathLike, *, data: pd.DataFrame | str,
                   name: str | None = None) -> Path:
    """Export a fitted :class:`~companion.recsys.deep.TwoTower` as a SavedModel scorer
    (``model.export``) plus the arrays that map shop ids to codes; :func:`load` returns a
    :class:`ServingRecommender` that needs no companion Keras code to score."""
    if type(model).__name__ not in KERAS_MODELS:
        raise TypeError(f"export_serving expects a fitted TwoTower, got {type(model).__name__}.")
    model._check_fitted()
    version = model_version(data, name or f"{type(model).__name__}-serving")
    writer = _Writer()
    state = {key: writer.encode(key, getattr(model, key))
             for key in ("user_encoder_", "item_encoder_", "seen_", "popularity_", "context_")}
    meta = {"format": FORMAT, "kind": "saved_model", "version": version,
            "model": {"class": "ServingRecommender", "params": {}, "state": state}}
    scorer = scorer_model(model)

    def fill(folder: Path) -> None:
        np.savez(folder / "arrays.npz", **writer.arrays)
        import logging

        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.WARNING)  # no "Assets written to" line
        try:
            scorer.export(str(folder / "saved_model"), format="tf_saved_model",
                          verbose=False)
        finally:
            tf_logger.setLevel(level)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    return _write(path, fill)


CLASSICAL["ServingRecommender"] = ServingRecommender


def to_tflite(path: str | os.PathLike) -> bytes:
    """Convert the SavedModel of an :func:`export_serving` artifact to a TFLite (LiteRT)
    flatbuffer with TensorFlow's own converter; returns its bytes."""
    tf = require("tensorflow", "deep")

    folder = Path(path) / "saved_model"
    if not folder.is_dir():
        raise FileNotFoundError(f"{path} has no saved_model/; write it with export_serving.")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    return converter.convert()


class TFLiteScorer:
    """Score users with a TFLite flatbuffer from :func:`to_tflite`, one batch at a time."""

    def __init__(self, content: bytes) -> None:
        import warnings

        tf = require("tensorflow", "deep")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_content=content, num_threads=1)
        self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    def _input(self, word: str) -> dict:
        for name, detail in self.inputs.items():
            if word in name:
                return detail
        raise KeyError(f"the TFLite model has no input named like {word!r}: "
                       f"{sorted(self.inputs)}.")

    def __call__(self, users: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Scores of every item for users (codes) with their context codes."""
        users = np.asarray(users, dtype=np.int32)
        contexts = np.asarray(contexts, dtype=np.int32)
        u, c = self._input("user"), self._input("context")
        if self._batch != len(users):
            for detail in (u, c):
                self.interpreter.resize_tensor_input(detail["index"], [len(users)])
            self.interpreter.allocate_tensors()
            self._batch = len(users)
        self.interpreter.set_tensor(u["index"], users)
        self.interpreter.set_tensor(c["index"], contexts)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores of each row, best first (exact)."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def overlap_at_k(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of the items two top-k lists (rows of ``a`` and ``b``) have in common."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"the two lists differ in shape: {a.shape} and {b.shape}.")
    return float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b, strict=True)]))


def folder_size(path: str | os.PathLike) -> int:
    """Bytes of all files under ``path`` (or of the file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
