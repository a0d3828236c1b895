"""A recommendation service over HTTP (FastAPI on uvicorn), ready for production.

Endpoints (JSON unless said otherwise):

* ``GET /health``: status, model name, version, numbers of customers and items;
* ``GET /recommend/{customer}?k=10&exclude_seen=false``: the top ``k`` items for one
  customer, addressed by the shop's own id (for example 17850 in Online Retail);
* ``POST /recommend`` with ``{"customers": [...], "k": 10, "exclude_seen": false}``: the
  same for a batch; or with ``{"history": ["85123A", "22423"], "k": 10}``, optionally with
  ``"customer": 17850``: recommendations from a basket or session given at request time
  (:meth:`companion.recsys.baselines.Recommender.recommend_from_history`), for a visitor the
  model has never seen or on top of a known customer's purchases. Products the model does
  not know are listed in ``"unknown_items"``, not refused;
* ``POST /reload`` with ``{"artifact": "name"}`` (or no body: the artifact served now) and
  the header ``Authorization: Bearer <token>``: load an artifact (:mod:`companion.ops.export`)
  from the models folder and swap it in;
* ``GET /metrics``: Prometheus text exposition (request counts and latency histogram by
  route, fallbacks, unknown products, reloads, the model version, workers).

Every JSON answer carries the served model's ``version`` (model, code hash, data hash).
Customers the model has never seen get the popularity ranking and ``"fallback": true``.
Bad input gets a 4xx answer whose ``error`` names the parameter and the problem; no
answer ever shows a server path, an object's repr or a traceback (those go to the log,
under the request's id).

**Speed.** When a model is loaded, the top :data:`MAX_K` lists of every known customer
(up to ``precompute`` customers, the most active first), with and without the items they
bought, and the popularity fallback for every ``k`` are computed once, in chunks, and the
JSON of every item id is written out once. ``GET /recommend`` for such a customer is then
a dictionary look-up and a string join in the event loop, with no model call and no
thread hand-off; the answer is the first ``k`` of the stored list. Anything else (a
history, a customer beyond the precomputed ones) calls the model in a worker thread.

**Reloads.** The served model sits behind one reference (:class:`RecommendationService`).
A request reads that reference once and uses what it read to the end, and a reload builds
the new model, precomputed lists included, completely before it replaces the reference in
one assignment, so no request ever sees half a model and none is dropped while models
change. With several worker processes (``--workers``), the worker that performed a reload
publishes it in a version file of the service's state folder; every other worker watches
that file, loads the same artifact and swaps it in the same way, and a worker that starts
later (a restart) begins on the latest published artifact. The reload's answer says how
many workers serve the new version.

**Security.** ``/reload`` is switched off (403) unless the environment variable
``COMPANION_RELOAD_TOKEN`` (or ``reload_token``) holds a token, and needs that token as
a bearer token (401 otherwise). It loads only artifact folders inside the configured
models folder (``--models-dir``; by default the folder that holds the ``--artifact``
served at start-up); other paths, symbolic links that leave the folder included, are
refused with 403. Artifacts are loaded without pickle, so a reload can swap the model but
never run code. Request bodies are limited (:data:`MAX_BODY` bytes; 413) and so is each
request's time (:data:`REQUEST_TIMEOUT` seconds, :data:`RELOAD_TIMEOUT` for a reload;
503). The service listens on 127.0.0.1 unless told otherwise.

**Operations.** Each request gets an id (the caller's ``X-Request-ID`` when it is a
plain token of at most 128 characters, else a new one), returned in the ``X-Request-ID``
header, quoted in error answers and written to a structured access log: one JSON object
per line on standard output (logger ``companion.access``). On SIGTERM or Ctrl-C uvicorn
stops accepting connections and finishes the requests in flight (up to
``--graceful-timeout`` seconds) before the process exits.

``import companion.ops.serving`` is light: FastAPI, uvicorn and TensorFlow are imported only
when an app is built or a Keras artifact is loaded. The command line (wired as
``python -m companion serve``) is :func:`add_arguments` plus :func:`run`; this module also
runs on its own: ``python -m companion.ops.serving --port 8000``.
"""

import argparse
import asyncio
import bisect
import contextlib
import hmac
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from companion._optional import require
from companion.ops import export
from companion.recsys import baselines as rec

#: items in an answer unless ``k`` says otherwise
DEFAULT_K = 10
#: the largest ``k``, and the depth of the precomputed top lists
MAX_K = 100
#: most customers in one ``POST /recommend``
MAX_BATCH = 1000
#: most product ids in one history
MAX_HISTORY = 1000
#: largest request body accepted, in bytes (a batch of MAX_BATCH long ids fits easily)
MAX_BODY = 256 * 1024
#: seconds a request may take, body included, before it is answered with 503
REQUEST_TIMEOUT = 10.0
#: seconds a reload may take (loading, precomputing and waiting for the other workers)
RELOAD_TIMEOUT = 300.0
#: customers whose top lists are precomputed at load (the most active first)
DEFAULT_PRECOMPUTE = 200_000
#: the environment variable that holds the bearer token of ``POST /reload``
TOKEN_ENV = "COMPANION_RELOAD_TOKEN"
#: the environment variable that names the models folder (``--models-dir``)
MODELS_ENV = "COMPANION_MODELS_DIR"
_WORKER_ENV = "COMPANION_SERVING_WORKER"  # a worker process's configuration (JSON)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

access_log = logging.getLogger("companion.access")
log = logging.getLogger("companion.ops.serving")


def default_model() -> rec.Recommender:
    """The model ``serve`` fits when given no artifact: the customer's own past items
    (repeat-buy, half-life 90 days) blended with item-kNN, a strong model of chapter 5
    that fits in seconds on the full shop."""
    return rec.Blend(rec.ItemKNN(), weight=4.0)


class RequestError(ValueError):
    """A problem with the request (answered with ``status``, 422 by default)."""

    status = 422


class Unauthorized(RequestError):
    """No or a wrong bearer token (401)."""

    status = 401


class Forbidden(RequestError):
    """Switched off, or a path outside the models folder (403)."""

    status = 403


# ----------------------------------------------------------------------------- the model


class Served:
    """One served model with its version and precomputed answers; never changed after it
    is built (a reload builds a new one).

    ``top`` and ``top_unseen`` hold, for each precomputed customer (row ``rows[id]``), the
    codes of the :data:`MAX_K` best items without and with the items the customer bought,
    exactly as ``model.recommend(ids, MAX_K, exclude_seen=...)`` orders them; an answer
    for ``k`` items is their first ``k``. ``fallback[k]`` holds the popularity answer for
    customers the model does not know, as ``model.recommend`` gives it for that ``k``.
    """

    def __init__(self, model: rec.Recommender, version: dict, source: str = "",
                 artifact: str | os.PathLike | None = None, generation: int = 0,
                 precompute: int = DEFAULT_PRECOMPUTE) -> None:
        model._check_fitted()
        self.model = model
        self.version = version
        self.source = source
        self.artifact = Path(artifact) if artifact is not None else None
        self.generation = generation
        self.loaded_at = time.time()
        self.version_id = export.version_id(version)
        self.version_json = json.dumps(self.version_id)
        users = model.user_encoder_.classes_
        self.int_ids = users.dtype.kind in "iu"
        self.n_customers = len(users)
        self.n_items = len(model.item_encoder_)
        self.supports_history = bool(getattr(model, "supports_history", False))
        items = model.items_
        self.item_values = [_plain(v) for v in items]
        self.item_json = [json.dumps(v) for v in self.item_values]
        self.depth = min(MAX_K, self.n_items)
        pop = model.score_codes(np.array([-1], dtype=np.int64))
        self.fallback = [None] + [rec._top_k(pop, k)[0].tolist()
                                  for k in range(1, self.depth + 1)]
        self._precompute(model, users, precompute)

    def _precompute(self, model: rec.Recommender, users, limit: int) -> None:
        n = self.n_customers
        if limit < 0:
            raise ValueError(f"precompute must be >= 0, got {limit}.")
        codes = np.arange(n, dtype=np.int64)
        if limit < n:  # the most active customers (most distinct items bought)
            activity = np.diff(model.seen_.indptr)[:n]
            codes = np.sort(np.argsort(-activity, kind="stable")[:limit])
        self.top = np.empty((len(codes), self.depth), dtype=np.int32)
        self.top_unseen = np.empty((len(codes), self.depth), dtype=np.int32)
        for lo in range(0, len(codes), rec._CHUNK):
            part = codes[lo:lo + rec._CHUNK]
            scores = model.score_codes(part)
            self.top[lo:lo + len(part)] = rec._top_k(scores, self.depth)
            sub = model.seen_[part]
            scores[np.repeat(np.arange(len(part)), np.diff(sub.indptr)), sub.indices] = -np.inf
            self.top_unseen[lo:lo + len(part)] = rec._top_k(scores, self.depth)
        ids = users.to_numpy()[codes].tolist()
        self.rows = dict(zip(ids, range(len(codes)), strict=True))
        self.complete = len(codes) == n  # every known customer is precomputed

    def lookup(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool] | None:
        """``(item codes, fallback)`` without calling the model, or None when the model
        must be called (:meth:`compute`)."""
        row = self.rows.get(customer)
        if row is not None:
            table = self.top_unseen if exclude_seen else self.top
            return table[row, :k].tolist(), False
        if self.complete:
            return self.fallback[k], True
        return None

    def compute(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool]:
        """``(item codes, fallback)`` from the model (customers beyond the precomputed)."""
        code = int(self.model.user_encoder_.transform(
            np.asarray([customer], dtype=np.int64 if self.int_ids else object))[0])
        if code < 0:
            return self.fallback[k], True
        scores = self.model.score_codes(np.array([code]))
        if exclude_seen:
            scores[0, self.model.seen_[code].indices] = -np.inf
        return rec._top_k(scores, k)[0].tolist(), False

    def answer(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool]:
        found = self.lookup(customer, k, exclude_seen)
        return found if found is not None else self.compute(customer, k, exclude_seen)

    def customer_json(self, customer: object) -> str:
        return str(customer) if self.int_ids else json.dumps(customer)

    def one_json(self, customer: object, k: int, codes: list, fallback: bool) -> bytes:
        """The body of ``GET /recommend/{customer}``, written without a JSON encoder."""
        items = ",".join([self.item_json[c] for c in codes])
        return (f'{{"version":{self.version_json},"k":{k},'
                f'"customer":{self.customer_json(customer)},"items":[{items}],'
                f'"fallback":{"true" if fallback else "false"}}}').encode()


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------------------- metrics

#: the ``route`` label of the request metrics
ROUTES = ("recommend_one", "recommend", "health", "metrics", "reload", "other")
#: status codes counted one by one (others are counted as ``other``)
STATUSES = (200, 400, 401, 403, 404, 405, 413, 422, 500, 503)
#: upper bounds (seconds) of the latency histogram's buckets
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
_N_S = len(STATUSES) + 1  # the last column counts other statuses
_N_B = len(BUCKETS) + 1   # the last bucket is +Inf
_COUNTS = 0
_HIST = _COUNTS + len(ROUTES) * _N_S
_SUMS = _HIST + len(ROUTES) * _N_B
(_FALLBACKS, _UNKNOWN_ITEMS, _RELOADS_OK, _RELOADS_FAILED, _GENERATION, _IN_FLIGHT,
 _LOADED_AT, _PID) = range(_SUMS + len(ROUTES), _SUMS + len(ROUTES) + 8)
_WIDTH = _PID + 1
MAX_WORKERS = 64


def route_of(path: str) -> int:
    """The index in :data:`ROUTES` of a request path."""
    if path.startswith("/recommend/"):
        return 0
    try:
        return ROUTES.index(path.strip("/"), 1, 5)
    except ValueError:
        return 5


class Metrics:
    """Counters of one process, in one float64 vector.

    With a state folder (several workers), each worker's vector is a row (a *slot*) of a
    memory-mapped file there, held by an exclusive lock on ``slot-N.lock`` while the worker
    lives; ``/metrics`` sums the rows, so whichever worker answers reports the whole
    service. A worker that replaces a dead one takes its slot and continues its counts,
    so counters never go down.
    """

    def __init__(self, state_dir: str | os.PathLike | None = None) -> None:
        self._lock = threading.Lock()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._lock_file = None
        if self.state_dir is None:
            self.table = np.zeros((1, _WIDTH))
            self.slot = 0
        else:
            self.table, self.slot = self._attach(self.state_dir)
        self.values = self.table[self.slot]
        self.values[_PID] = os.getpid()

    def _attach(self, folder: Path):
        import fcntl

        file = folder / "metrics.bin"
        with open(folder / "metrics.lock", "a+b") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if not file.exists() or file.stat().st_size != MAX_WORKERS * _WIDTH * 8:
                np.zeros((MAX_WORKERS, _WIDTH)).tofile(file)
        table = np.memmap(file, dtype=np.float64, mode="r+", shape=(MAX_WORKERS, _WIDTH))
        for slot in range(MAX_WORKERS):
            handle = open(folder / f"slot-{slot}.lock", "a+b")  # noqa: SIM115 - held for life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._lock_file = handle
            table[slot, _IN_FLIGHT] = 0.0
            return table, slot
        raise RuntimeError(f"more than {MAX_WORKERS} workers share {folder}.")

    def live_slots(self) -> list[int]:
        """Slots of workers alive now (this one included)."""
        if self.state_dir is None:
            return [0]
        import fcntl

        alive = []
        for slot in range(MAX_WORKERS):
            path = self.state_dir / f"slot-{slot}.lock"
            if slot == self.slot:
                alive.append(slot)
                continue
            if not path.exists():
                continue
            with open(path, "a+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    alive.append(slot)
                else:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        return alive

    def observe(self, route: int, status: int, seconds: float) -> None:
        try:
            column = STATUSES.index(status)
        except ValueError:
            column = _N_S - 1
        bucket = bisect.bisect_left(BUCKETS, seconds)
        values = self.values
        with self._lock:
            values[_COUNTS + route * _N_S + column] += 1
            values[_HIST + route * _N_B + bucket] += 1
            values[_SUMS + route] += seconds

    def add(self, index: int, amount: float = 1.0) -> None:
        with self._lock:
            self.values[index] += amount

    def set(self, index: int, value: float) -> None:
        self.values[index] = value

    def exposition(self, served: Served) -> str:
        """The Prometheus text format (version 0.0.4) of the whole service."""
        live = self.live_slots()
        total = np.asarray(self.table).sum(axis=0)  # counters: every slot, dead ones too
        lines = []

        def metric(name: str, kind: str, text: str) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

        metric("companion_http_requests_total", "counter",
               "HTTP requests answered, by route and status code.")
        for r, route in enumerate(ROUTES):
            for s in range(_N_S):
                n = total[_COUNTS + r * _N_S + s]
                if n:
                    status = STATUSES[s] if s < len(STATUSES) else "other"
                    lines.append(f'companion_http_requests_total{{route="{route}",'
                                 f'status="{status}"}} {n:.0f}')
        metric("companion_http_request_duration_seconds", "histogram",
               "Time from the request's arrival to the end of its answer, by route.")
        for r, route in enumerate(ROUTES):
            counts = np.cumsum(total[_HIST + r * _N_B:_HIST + (r + 1) * _N_B])
            if not counts[-1]:
                continue
            for le, n in zip((*map(repr, BUCKETS), "+Inf"), counts, strict=True):
                lines.append(f'companion_http_request_duration_seconds_bucket{{route="{route}",'
                             f'le="{le}"}} {n:.0f}')
            lines.append(f'companion_http_request_duration_seconds_sum{{route="{route}"}} '
                         f"{total[_SUMS + r]:.6f}")
            lines.append(f'companion_http_request_duration_seconds_count{{route="{route}"}} '
                         f"{counts[-1]:.0f}")
        for name, index, text in (
                ("companion_recommendation_fallbacks_total", _FALLBACKS,
                 "Recommendations answered with the popularity fallback (customer unknown "
                 "and no known product in the history)."),
                ("companion_history_unknown_items_total", _UNKNOWN_ITEMS,
                 "Products in request histories that the served model does not know."),
        ):
            metric(name, "counter", text)
            lines.append(f"{name} {total[index]:.0f}")
        metric("companion_model_reloads_total", "counter",
               "Model reloads by the workers, by result.")
        lines.append(f'companion_model_reloads_total{{result="ok"}} {total[_RELOADS_OK]:.0f}')
        lines.append(f'companion_model_reloads_total{{result="failed"}} '
                     f"{total[_RELOADS_FAILED]:.0f}")
        metric("companion_model_info", "gauge",
               "The model served by the worker that answered (value 1).")
        lines.append(f'companion_model_info{{version="{served.version_id}",model="'
                     f'{type(served.model).__name__}",generation="{served.generation}"}} 1')
        metric("companion_model_loaded_timestamp_seconds", "gauge",
               "When the answering worker loaded its model (Unix time).")
        lines.append(f"companion_model_loaded_timestamp_seconds {served.loaded_at:.3f}")
        metric("companion_workers", "gauge", "Worker processes alive.")
        lines.append(f"companion_workers {len(live)}")
        metric("companion_worker_model_generation", "gauge",
               "Reload generation each live worker serves (0: the model it started with).")
        for slot in live:
            lines.append(f'companion_worker_model_generation{{worker="{slot}"}} '
                         f"{self.table[slot, _GENERATION]:.0f}")
        metric("companion_requests_in_flight", "gauge", "Requests being answered now.")
        lines.append("companion_requests_in_flight "
                     f"{sum(self.table[s, _IN_FLIGHT] for s in live):.0f}")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- the service


class RecommendationService:
    """The served model and the logic of the endpoints, without the web layer.

    ``recommend`` here is what a request does once it is parsed, so the benchmark can
    time the same work in process and over HTTP. ``models_dir`` is the only folder
    :meth:`reload` reads from (None: reloads are refused). With ``state_dir`` the service
    is one of several worker processes: it counts its metrics in a shared file and
    follows the reloads the others publish there.
    """

    def __init__(self, model: rec.Recommender, version: dict, source: str = "", *,
                 artifact: str | os.PathLike | None = None,
                 models_dir: str | os.PathLike | None = None,
                 precompute: int = DEFAULT_PRECOMPUTE,
                 state_dir: str | os.PathLike | None = None,
                 poll_seconds: float = 0.25, freeze_gc: bool = False) -> None:
        self.precompute = precompute
        self.freeze_gc = freeze_gc
        self.models_dir = Path(models_dir).resolve() if models_dir is not None else None
        self._served = Served(model, version, source, artifact, precompute=precompute)
        self._reload_lock = threading.Lock()
        self._loading = threading.Lock()  # one artifact loaded at a time (memory)
        self.reloads = 0
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.metrics = Metrics(self.state_dir)
        self.metrics.set(_LOADED_AT, self._served.loaded_at)
        self._stop = threading.Event()
        self._watcher = None
        if self.state_dir is not None:
            self._failed_generation = -1
            self._follow()  # a worker started after a reload begins on its artifact
            self._watcher = threading.Thread(target=self._watch, args=(poll_seconds,),
                                             daemon=True, name="serving-reload-watch")
            self._watcher.start()

    @classmethod
    def from_artifact(cls, path: str | os.PathLike, **options) -> "RecommendationService":
        """A service for an artifact folder written by :mod:`companion.ops.export`; its
        ``models_dir`` defaults to the folder that holds the artifact."""
        path = Path(path)
        artifact = export.load(path)
        options.setdefault("models_dir", path.resolve().parent)
        options.setdefault("source", path.name)
        return cls(artifact.model, artifact.version, artifact=path, **options)

    @property
    def served(self) -> Served:
        """The model served now (read it once per request)."""
        return self._served

    def close(self) -> None:
        """Stop following reloads (the watcher thread of a worker)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def swap(self, model: rec.Recommender, version: dict, source: str = "",
             artifact: str | os.PathLike | None = None, generation: int | None = None
             ) -> Served:
        """Serve ``model`` from now on; returns what was served before. Requests in flight
        finish on the model they started with."""
        new = Served(model, version, source, artifact,
                     generation=self._served.generation if generation is None else generation,
                     precompute=self.precompute)  # the slow part, done before the swap
        return self._install(new)

    def _install(self, new: Served) -> Served:
        with self._reload_lock:
            old, self._served = self._served, new  # one reference assignment
            self.reloads += 1
        self.metrics.add(_RELOADS_OK)
        self.metrics.set(_GENERATION, new.generation)
        self.metrics.set(_LOADED_AT, new.loaded_at)
        if self.freeze_gc:  # the old model is freed when its last request ends
            _freeze_gc()
        return old

    # -- reloads ------------------------------------------------------------------------
    def resolve_artifact(self, name: object = None) -> Path:
        """The artifact folder ``name`` names inside the models folder (default: the one
        served now); raises :class:`Forbidden` for anything outside it and RequestError
        when it holds no artifact. Messages never show the server's paths."""
        if self.models_dir is None:
            raise Forbidden("reload is switched off: the service has no models folder "
                            "(start it with --models-dir).")
        if name is None:
            if self._served.artifact is None:
                raise RequestError("artifact: the served model was not loaded from an "
                                   "artifact; name a folder of the models folder.")
            candidate = self._served.artifact
        elif not isinstance(name, str) or not name.strip() or "\x00" in name:
            raise RequestError("artifact must be the name of a folder in the models folder.")
        else:
            candidate = self.models_dir / name
        root = self.models_dir
        candidate = candidate.resolve()
        if not candidate.is_relative_to(root):
            raise Forbidden("artifact: only folders inside the models folder can be loaded.")
        shown = candidate.relative_to(root).as_posix()
        if not (candidate / "meta.json").is_file():
            raise RequestError(f"artifact: the models folder has no artifact {shown!r} "
                               "(a folder with a meta.json).")
        for folder, dirs, files in os.walk(candidate):
            for entry in dirs + files:
                if not (Path(folder) / entry).resolve().is_relative_to(root):
                    raise Forbidden(f"artifact {shown!r} links to files outside the models "
                                    "folder.")
        return candidate

    def reload(self, artifact: object = None, *, publish: bool = True) -> Served:
        """Load an artifact of the models folder (default: the one served now) and swap it
        in; with several workers, publish it so that the others follow."""
        path = self.resolve_artifact(artifact)
        with self._loading:
            try:  # the slow part, done before the swap
                loaded = export.load(path)
                new = Served(loaded.model, loaded.version, path.name, path,
                             generation=self._served.generation, precompute=self.precompute)
            except Exception:
                self.metrics.add(_RELOADS_FAILED)
                log.exception("reload of %s failed", path)
                shown = path.relative_to(self.models_dir).as_posix()
                raise RequestError(f"artifact {shown!r} could not be loaded (see the "
                                   "service's log).") from None
            if publish and self.state_dir is not None:  # only what loaded is published
                new.generation = self._publish(path)
            self._install(new)
        return new

    def _publish(self, path: Path) -> int:
        """Write the version file (several workers); returns the new generation."""
        import fcntl

        with open(self.state_dir / "model.lock", "a+b") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            current = self._read_published()
            generation = (current["generation"] if current else 0) + 1
            tmp = self.state_dir / f".model-{os.getpid()}.json"
            tmp.write_text(json.dumps({"generation": generation, "artifact": str(path)}))
            os.replace(tmp, self.state_dir / "model.json")
        return generation

    def _read_published(self) -> dict | None:
        try:
            return json.loads((self.state_dir / "model.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _newer(self) -> dict | None:
        """The published reload when it is newer than the model served (and not one that
        failed here)."""
        published = self._read_published()
        if not published or published["generation"] <= self._served.generation \
                or published["generation"] == self._failed_generation:
            return None
        return published

    def _follow(self) -> None:
        """Load the published artifact when it is newer than the one served."""
        if self._newer() is None:
            return
        with self._loading:
            published = self._newer()  # again: a reload here may have installed it
            if published is None:
                return
            try:
                loaded = export.load(published["artifact"])
                self.swap(loaded.model, loaded.version, Path(published["artifact"]).name,
                          published["artifact"], published["generation"])
            except Exception:
                self._failed_generation = published["generation"]
                self.metrics.add(_RELOADS_FAILED)
                log.exception("worker %d could not follow reload %d", os.getpid(),
                              published["generation"])
                return
        log.info("worker %d follows reload %d: %s", os.getpid(), published["generation"],
                 self._served.version_id)

    def _watch(self, seconds: float) -> None:
        file = self.state_dir / "model.json"
        last = None
        while not self._stop.wait(seconds):
            try:
                stamp = file.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if stamp != last:
                last = stamp
                self._follow()

    def following(self, generation: int) -> tuple[int, int]:
        """``(workers alive, those serving ``generation`` or later)``."""
        live = self.metrics.live_slots()
        return len(live), int(sum(self.metrics.table[s, _GENERATION] >= generation
                                  for s in live))

    # -- request logic ------------------------------------------------------------------
    @staticmethod
    def parse_customer(raw: object, served: Served) -> object:
        """A customer id as the model stores it, or RequestError naming the value."""
        if served.int_ids:
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise RequestError(f"customer must be an integer shop id, got {raw!r}.")
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise RequestError(f"customer must be an integer shop id, got {raw!r}.") \
                    from None
        if not isinstance(raw, str | int) or isinstance(raw, bool) or str(raw) == "":
            raise RequestError(f"customer must be a non-empty shop id, got {raw!r}.")
        return str(raw)

    @staticmethod
    def check_k(k: object, served: Served) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
            raise RequestError(f"k must be an integer from 1 to {MAX_K}, got {k!r}.")
        if k > served.n_items:
            raise RequestError(f"k={k} exceeds the catalogue of {served.n_items} items.")
        return int(k)

    def recommend(self, customers: Sequence[object], k: int = DEFAULT_K,
                  exclude_seen: bool = False) -> dict:
        """Top-``k`` items for each customer: ``{"version", "k", "results": [{"customer",
        "items", "fallback"}, ...]}``; raises RequestError on bad input."""
        served = self._served  # read once: a reload during this call changes nothing here
        k = self.check_k(k, served)
        if not 1 <= len(customers) <= MAX_BATCH:
            raise RequestError(f"customers must hold 1 to {MAX_BATCH} ids, "
                               f"got {len(customers)}.")
        ids = [self.parse_customer(c, served) for c in customers]
        results = []
        for c in ids:
            codes, fallback = served.answer(c, k, bool(exclude_seen))
            results.append({"customer": c, "items": [served.item_values[i] for i in codes],
                            "fallback": fallback})
        self.metrics.add(_FALLBACKS, sum(r["fallback"] for r in results))
        return {"version": served.version_id, "k": k, "results": results}

    def recommend_history(self, history: Sequence[object], customer: object = None,
                          k: int = DEFAULT_K, exclude_seen: bool = False) -> dict:
        """Top-``k`` items from a history given now (a basket or session of product ids),
        alone or added to a known customer's purchases: ``{"version", "k", "customer",
        "items", "fallback", "unknown_items"}``. Products the model does not know are
        listed in ``unknown_items``; with none known and no known customer the answer is
        the popularity ranking (``fallback``)."""
        served = self._served
        k = self.check_k(k, served)
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise RequestError("history must be a list of product ids.")
        if len(history) > MAX_HISTORY:
            raise RequestError(f"history must hold at most {MAX_HISTORY} product ids, "
                               f"got {len(history)}.")
        if not served.supports_history:
            raise RequestError(f"the served model ({type(served.model).__name__}) cannot "
                               "recommend from a history; serve a baseline or a blend.")
        model = served.model
        user_id = self.parse_customer(customer, served) if customer is not None else None
        codes, unknown = model.history_codes(history)
        items = model.recommend_from_history(history, k=k, exclude_seen=bool(exclude_seen),
                                             user_id=user_id)
        known_customer = user_id is not None and model._user_code(user_id) >= 0
        fallback = len(codes) == 0 and not known_customer
        self.metrics.add(_FALLBACKS, fallback)
        self.metrics.add(_UNKNOWN_ITEMS, len(unknown))
        return {"version": served.version_id, "k": k, "customer": user_id,
                "items": [_plain(v) for v in items], "fallback": fallback,
                "unknown_items": unknown}

    def health(self) -> dict:
        served = self._served
        return {"status": "ok", "model": type(served.model).__name__,
                "version": served.version_id, "code": served.version["code"],
                "data": served.version["data"], "source": served.source,
                "customers": served.n_customers, "items": served.n_items,
                "precomputed": len(served.rows), "history": served.supports_history,
                "reloads": self.reloads, "generation": served.generation}


def _freeze_gc() -> None:
    """Collect, then move every object alive now (the model, the precomputed lists, the
    libraries) out of the garbage collector's sight (``gc.freeze()``): a full collection
    then scans only what requests allocate, instead of pausing every request for a scan
    of the whole heap (a few hundred milliseconds with a model loaded). Called by the
    server process after each load, never by a library user's process."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


# ----------------------------------------------------------------------------- web layer


class _TooLarge(Exception):
    pass


async def _within(seconds: float, awaitable) -> None:
    if hasattr(asyncio, "timeout"):  # Python 3.11+
        async with asyncio.timeout(seconds):
            await awaitable
    else:  # pragma: no cover - Python 3.10
        await asyncio.wait_for(awaitable, seconds)


_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_JSON = (b"content-type", b"application/json")


class Gateway:
    """The ASGI layer in front of the FastAPI app: request ids, body and time limits,
    metrics and the JSON access log, as one plain ASGI callable.

    It also answers ``GET /recommend/{customer}`` itself, without FastAPI: parameters
    parsed by hand, the precomputed list looked up, the JSON written as text. FastAPI's
    parameter injection, routing and middleware cost about ten times the look-up, and this
    is the request a shop sends most. The other endpoints go to the FastAPI app.
    """

    def __init__(self, app, service: RecommendationService, *, max_body: int = MAX_BODY,
                 request_timeout: float = REQUEST_TIMEOUT,
                 reload_timeout: float = RELOAD_TIMEOUT) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.reload_timeout = reload_timeout
        self.pid = os.getpid()
        # request ids: a random prefix per process and a counter (cheaper than uuid4)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._counter = iter(range(1, 1 << 62))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = route_of(path)
        request_id = length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    request_id = text
            elif key == b"content-length":
                length = value
        if request_id is None:
            request_id = f"{self._id_prefix}-{next(self._counter):x}"
        rid = request_id.encode()
        sent = {"status": 0, "bytes": 0}

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        metrics = self.service.metrics
        metrics.add(_IN_FLIGHT, 1)
        limit = self.reload_timeout if route == 4 else self.request_timeout
        try:
            if route == 0 and "/" not in path[11:] and len(path) > 11:
                if scope["method"] not in ("GET", "HEAD"):
                    await self._error(send_with_id, sent, 405, "method not allowed: "
                                      "/recommend/{customer} answers GET.", request_id)
                    return
                await _within(limit, self._recommend_one(scope, send_with_id, request_id))
            else:
                scope.setdefault("state", {})["request_id"] = request_id
                await _within(limit, self._forward(scope, receive, send_with_id, length))
        except _TooLarge:
            await self._error(send_with_id, sent, 413, f"the request body exceeds "
                              f"{self.max_body} bytes.", request_id)
        except (TimeoutError, asyncio.TimeoutError):
            await self._error(send_with_id, sent, 503, "the request took longer than "
                              f"{limit:g} s.", request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            await self._error(send_with_id, sent, 500, "internal error.", request_id)
        finally:
            metrics.add(_IN_FLIGHT, -1)
            seconds = time.perf_counter() - start
            metrics.observe(route, sent["status"], seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                now = time.time()
                access_log.info(json.dumps({
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                    + f".{int(now * 1000) % 1000:03d}Z",
                    "request_id": request_id, "method": scope["method"], "path": path,
                    "query": scope["query_string"].decode("latin-1"),
                    "status": sent["status"], "ms": round(seconds * 1000, 3),
                    "bytes": sent["bytes"], "client": client[0] if client else None,
                    "worker": self.pid, "version": self.service.served.version_id}))

    async def _recommend_one(self, scope, send, request_id: str) -> None:
        """``GET /recommend/{customer}?k=10&exclude_seen=false``."""
        service = self.service
        served = service.served  # read once
        k, exclude_seen = DEFAULT_K, False
        try:
            for name, value in _parse_query(scope["query_string"]):
                if name == "k":
                    try:
                        k = int(value)
                    except ValueError:
                        raise RequestError(f"k: must be an integer from 1 to {MAX_K}, got "
                                           f"{value!r}.") from None
                    if not 1 <= k <= MAX_K:
                        raise RequestError(f"k: must be an integer from 1 to {MAX_K}, got "
                                           f"{k}.")
                elif name == "exclude_seen":
                    lowered = value.lower()
                    if lowered not in _TRUE and lowered not in _FALSE:
                        raise RequestError(f"exclude_seen: must be true or false, got "
                                           f"{value!r}.")
                    exclude_seen = lowered in _TRUE
            customer = service.parse_customer(scope["path"][11:], served)
            k = service.check_k(k, served)
        except RequestError as err:
            body = json.dumps({"error": str(err), "version": served.version_id,
                               "request_id": request_id}).encode()
            await _respond(send, err.status, body)
            return
        found = served.lookup(customer, k, exclude_seen)
        if found is None:  # a model call: in a worker thread, not in the event loop
            from starlette.concurrency import run_in_threadpool

            found = await run_in_threadpool(served.compute, customer, k, exclude_seen)
        codes, fallback = found
        if fallback:
            service.metrics.add(_FALLBACKS)
        await _respond(send, 200, served.one_json(customer, k, codes, fallback),
                       head=scope["method"] == "HEAD")

    async def _forward(self, scope, receive, send, length) -> None:
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = self.max_body + 1
            if declared > self.max_body:
                raise _TooLarge
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = await self._buffered(receive)
        await self.app(scope, receive, send)

    async def _buffered(self, receive):
        """Read the whole body (at most ``max_body`` bytes) before the app runs."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                raise _TooLarge
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        pending = [first]

        async def replay():
            return pending.pop() if pending else await receive()

        return replay

    async def _error(self, send, sent, status: int, message: str, request_id: str) -> None:
        if sent["status"]:  # the answer had begun: nothing more can be said
            return
        await _respond(send, status, json.dumps({
            "error": message, "version": self.service.served.version_id,
            "request_id": request_id}).encode())


def _parse_query(raw: bytes) -> list[tuple[str, str]]:
    if not raw:
        return []
    from urllib.parse import parse_qsl

    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


async def _respond(send, status: int, body: bytes, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})


def create_app(service: RecommendationService, *, reload_token: str | None = None,
               max_body: int = MAX_BODY, request_timeout: float = REQUEST_TIMEOUT,
               reload_timeout: float = RELOAD_TIMEOUT) -> Gateway:
    """The ASGI application for ``service``: the FastAPI app (``.app``) behind a
    :class:`Gateway`. ``reload_token`` defaults to the environment variable
    ``COMPANION_RELOAD_TOKEN``; without either, ``/reload`` answers 403."""
    require("fastapi", "serve", load=False)
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, model_validator
    from starlette.exceptions import HTTPException

    token = reload_token if reload_token is not None else os.environ.get(TOKEN_ENV, "")
    token = token.strip()

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        customers: list[int | str] | None = Field(
            None, min_length=1, max_length=MAX_BATCH, description="shop customer ids")
        history: list[int | str] | None = Field(
            None, max_length=MAX_HISTORY, description="product ids bought or viewed now")
        customer: int | str | None = Field(
            None, description="with a history: the customer it belongs to, if known")
        k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
        exclude_seen: bool = False

        @model_validator(mode="after")
        def _one_form(self):
            if (self.customers is None) == (self.history is None):
                raise ValueError("give either customers (a list of customer ids) or history "
                                 "(a list of product ids, with an optional customer)")
            if self.customers is not None and self.customer is not None:
                raise ValueError("customer goes with a history; list customers instead")
            return self

    app = FastAPI(title="companion recommender", version="2", docs_url=None, redoc_url=None,
                  redirect_slashes=False)

    def error(status: int, message: str, request=None, headers=None) -> JSONResponse:
        body = {"error": message, "version": service.served.version_id}
        if request is not None:
            body["request_id"] = request.scope.get("state", {}).get("request_id")
        return JSONResponse(status_code=status, content=body, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{'.'.join(loc) or 'request'}: {message}")
        return error(422, "; ".join(problems), request)

    @app.exception_handler(RequestError)
    async def _bad(request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error(exc.status, str(exc), request, headers)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail).lower() + ".", request)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):  # the Gateway logs it with the request id
        return error(500, "internal error.", request)

    @app.get("/health")
    async def health() -> dict:
        return service.health()

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> dict:
        if request.history is not None:
            return service.recommend_history(request.history, request.customer,
                                             k=request.k, exclude_seen=request.exclude_seen)
        return service.recommend(request.customers, k=request.k,
                                 exclude_seen=request.exclude_seen)

    @app.post("/reload")
    async def reload(request: Request) -> dict:
        if not token:
            raise Forbidden(f"reload is switched off: set {TOKEN_ENV} to a token.")
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), token.encode()):
            raise Unauthorized("reload needs the header 'Authorization: Bearer <token>' "
                               "with the service's token.")
        raw = await request.body()
        artifact = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise RequestError("request: the body is not valid JSON.") from None
            if not isinstance(body, dict) or set(body) - {"artifact"}:
                raise RequestError('request: expected {"artifact": "<folder name>"}.')
            artifact = body.get("artifact")
        previous = service.served.version_id
        served = await run_in_threadpool(service.reload, artifact)
        live, following = len(service.metrics.live_slots()), 1
        if service.state_dir is not None:  # wait for the other workers to follow
            deadline = time.monotonic() + reload_timeout / 2
            while True:
                live, following = service.following(served.generation)
                if following >= live or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        return {"version": served.version_id, "previous": previous,
                "source": served.source, "generation": served.generation,
                "workers": {"alive": live, "serving": following}}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(service.served),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return Gateway(app, service, max_body=max_body, request_timeout=request_timeout,
                   reload_timeout=reload_timeout)


def _free_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(service: RecommendationService, host: str = "127.0.0.1",
                    timeout: float = 30.0, **app_options) -> Iterator[str]:
    """Run the service on a free port of ``host`` in a background thread; yields its base
    URL (``http://127.0.0.1:PORT``) and stops the server when the block ends.
    ``app_options`` go to :func:`create_app` (for example ``reload_token``)."""
    uvicorn = require("uvicorn", "serve")

    sock = _free_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(service, **app_options), host=host, port=port,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"serving-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start on {host}:{port}.")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextlib.contextmanager
def serve_in_subprocess(artifact: str | os.PathLike, host: str = "127.0.0.1",
                        timeout: float = 120.0, env: dict | None = None,
                        options: Sequence[str] = (), log_file: str | os.PathLike | None = None
                        ) -> Iterator[str]:
    """Run ``python -m companion.ops.serving --artifact ARTIFACT [options]`` on a free port of
    ``host`` in its own process (its own interpreter, so no lock is shared with the
    caller); yields the base URL and stops the process (SIGTERM, so it finishes what is
    in flight) when the block ends. Its access log goes to ``log_file`` (default:
    nowhere) and its error log to a temporary file quoted if it fails to start."""
    httpx = require("httpx", "serve")

    with _free_socket(host) as sock:
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "companion.ops.serving", "--artifact", str(artifact),
           "--host", host, "--port", str(port), "--log-level", "warning", *options]
    url = f"http://{host}:{port}"
    with contextlib.ExitStack() as stack:
        errors = stack.enter_context(tempfile.TemporaryFile("w+"))
        out = (stack.enter_context(open(log_file, "w")) if log_file is not None  # noqa: SIM115
               else subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out,
                                stderr=errors, text=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"the service exited with code {proc.returncode}: "
                                       f"{errors.read()[-2000:]}")
                try:
                    if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not answer on {url} within "
                                       f"{timeout} s.")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------- load test


class HttpRequester:
    """``GET /recommend/{customer}?k=`` over one keep-alive connection (one per worker)."""

    def __init__(self, url: str, k: int = DEFAULT_K, timeout: float = 30.0) -> None:
        httpx = require("httpx", "serve")

        self.client = httpx.Client(base_url=url, timeout=timeout)
        self.k = k

    def __call__(self, customer: object) -> dict:
        response = self.client.get(f"/recommend/{customer}", params={"k": self.k})
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.client.close()


def load_test(make_requester: Callable[[], Callable[[object], object]],
              customers: Sequence[object], *, concurrency: int = 1, requests: int = 200,
              max_seconds: float = 10.0, seed: int = 0) -> dict:
    """Send ``requests`` requests from ``concurrency`` threads (each with its own
    requester from ``make_requester``), stopping early after ``max_seconds``.

    Customers are drawn at random from ``customers``. Returns the number sent and failed,
    the wall seconds, the throughput (requests per second) and the latency percentiles p50,
    p95 and p99 in milliseconds.
    """
    if concurrency < 1 or requests < 1 or max_seconds <= 0:
        raise ValueError("concurrency and requests must be positive and max_seconds > 0, got "
                         f"{concurrency}, {requests}, {max_seconds}.")
    if len(customers) == 0:
        raise ValueError("customers is empty.")
    order = np.random.default_rng(seed).integers(0, len(customers), requests)
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        requester = make_requester()
        try:
            while time.perf_counter() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                start = time.perf_counter()
                try:
                    requester(customers[order[n]])
                except Exception as err:  # noqa: BLE001 - every failure is counted
                    failures.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - start)
        finally:
            getattr(requester, "close", lambda: None)()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000 if latencies else np.array([np.nan])
    return {"concurrency": concurrency, "requests": len(latencies) + len(failures),
            "failed": len(failures), "seconds": seconds,
            "throughput": len(latencies) / seconds,
            "p50 ms": float(np.percentile(ms, 50)), "p95 ms": float(np.percentile(ms, 95)),
            "p99 ms": float(np.percentile(ms, 99)),
            "first failure": failures[0] if failures else ""}


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m companion serve``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--artifact", default=None,
                        help="a model folder written by companion.ops.export (default: fit "
                             "repeat-buy + item-kNN on the data directory, or on the "
                             "synthetic shop when no data is found)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the Online Retail files (default: "
                             "$COMPANION_DATA_DIR, then the user cache; never downloads)")
    parser.add_argument("--models-dir", default=os.environ.get(MODELS_ENV),
                        help="the only folder POST /reload may load artifacts from "
                             f"(default: ${MODELS_ENV}, else the folder holding --artifact; "
                             "without either, reloads are refused)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes; each can answer any request, and all follow "
                             "a reload (default: 1)")
    parser.add_argument("--precompute", type=int, default=DEFAULT_PRECOMPUTE,
                        help="customers whose top lists are computed when a model loads, the "
                             f"most active first (default: {DEFAULT_PRECOMPUTE:,}; 0: none)")
    parser.add_argument("--max-body", type=int, default=MAX_BODY,
                        help=f"largest request body in bytes (default: {MAX_BODY})")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help=f"seconds a request may take (default: {REQUEST_TIMEOUT:g})")
    parser.add_argument("--reload-timeout", type=float, default=RELOAD_TIMEOUT,
                        help=f"seconds a reload may take (default: {RELOAD_TIMEOUT:g})")
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="on SIGTERM, seconds to finish the requests in flight "
                             "(default: 30)")
    parser.add_argument("--http", default="auto", choices=["auto", "httptools", "h11"],
                        help="uvicorn's HTTP parser (default: httptools when installed)")
    parser.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                        help="uvicorn's event loop (default: uvloop when installed)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not write the JSON access log to standard output")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def default_service(data_dir: str | os.PathLike | None = None, **options
                    ) -> tuple[RecommendationService, str]:
    """Fit :func:`default_model` on the Online Retail II data found locally (never
    downloaded), or on the synthetic shop; returns the service and a description."""
    model, version, source = _fit_default(data_dir)
    return RecommendationService(model, version, source=source, **options), source


def _fit_default(data_dir) -> tuple[rec.Recommender, dict, str]:
    from companion import data
    from companion.data import preprocessing

    shop = data.load_shop(version="II", data_dir=data_dir, download=False)
    transactions = preprocessing.clean_transactions(shop.transactions).transactions
    interactions = preprocessing.to_interactions(transactions)
    model = default_model().fit(interactions)
    where = "Online Retail II" if shop.is_real else "the synthetic shop (no data found)"
    version = export.model_version(interactions, "repeat-buy+item-kNN")
    return model, version, f"repeat-buy + item-kNN fitted at start-up on {where}"


class _JsonLines(logging.Formatter):
    """Log records as JSON objects, one a line (the access log's are already JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == access_log.name:
            return record.getMessage()
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage(), "worker": record.process}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str, access: bool) -> None:
    for logger, stream, on in ((access_log, sys.stdout, access), (log, sys.stderr, True)):
        logger.handlers.clear()
        logger.propagate = False
        if on:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(_JsonLines())
            logger.addHandler(handler)
        logger.setLevel(logging.INFO if logger is access_log else level.upper())
    access_log.disabled = not access


def _options(args: argparse.Namespace) -> dict:
    return {"max_body": args.max_body, "request_timeout": args.request_timeout,
            "reload_timeout": args.reload_timeout}


def worker_app() -> Gateway:
    """The app factory of a worker process (``--workers`` > 1): its configuration comes
    from the parent in the environment."""
    config = json.loads(os.environ[_WORKER_ENV])
    _configure_logging(config["log_level"], config["access_log"])
    service = RecommendationService.from_artifact(
        config["artifact"], models_dir=config["models_dir"], precompute=config["precompute"],
        state_dir=config["state_dir"], source=config["source"], freeze_gc=True)
    _freeze_gc()
    return create_app(service, **config["app"])


def _check_args(args: argparse.Namespace) -> str | None:
    if not 0 < args.port < 65536:
        return f"--port must be 1 to 65535, got {args.port}."
    if not 1 <= args.workers <= MAX_WORKERS:
        return f"--workers must be 1 to {MAX_WORKERS}, got {args.workers}."
    if args.workers > 1 and os.name != "posix":
        return "--workers above 1 needs a POSIX system (file locks)."
    if args.precompute < 0:
        return f"--precompute must be >= 0, got {args.precompute}."
    if args.max_body < 1 or args.request_timeout <= 0 or args.reload_timeout <= 0 \
            or args.graceful_timeout < 0:
        return "--max-body and the timeouts must be positive."
    if args.models_dir is not None and not Path(args.models_dir).is_dir():
        return f"--models-dir {args.models_dir} is not a folder."
    return None


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); returns the exit code."""
    try:
        require("fastapi", "serve", load=False)
        uvicorn = require("uvicorn", "serve")
    except ModuleNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    problem = _check_args(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    models_dir = args.models_dir
    if models_dir is None and args.artifact is not None:
        models_dir = str(Path(args.artifact).resolve().parent)
    state_dir = tempfile.mkdtemp(prefix="companion-serving-") if args.workers > 1 else None
    try:
        if args.artifact is not None:
            try:
                artifact = export.load(args.artifact)
            except (FileNotFoundError, ValueError, KeyError) as err:
                print(f"cannot serve --artifact {args.artifact}: {err}", file=sys.stderr)
                return 2
            model, version, what = artifact.model, artifact.version, args.artifact
            path, source = Path(args.artifact), Path(args.artifact).name
        else:
            model, version, source = _fit_default(args.data_dir)
            what, path = source, None
            if state_dir is not None:  # the workers load what the parent fitted
                path = export.save(model, Path(state_dir) / "initial", data=version["data"],
                                   name=version["model"])
        _configure_logging(args.log_level, args.access_log)
        config = {"host": args.host, "port": args.port, "log_level": args.log_level,
                  "access_log": False, "lifespan": "off", "server_header": False,
                  "http": args.http, "loop": args.loop,
                  "timeout_graceful_shutdown": max(1, round(args.graceful_timeout))}
        if state_dir is None:
            service = RecommendationService(model, version, source, artifact=path,
                                            models_dir=models_dir, precompute=args.precompute,
                                            freeze_gc=True)
            health = service.health()
            app = create_app(service, **_options(args))
            del model
            _freeze_gc()
        else:
            health = {"version": export.version_id(version),
                      "customers": len(model.user_encoder_), "items": len(model.item_encoder_)}
            del model
            os.environ[_WORKER_ENV] = json.dumps({
                "artifact": str(path), "models_dir": models_dir, "state_dir": state_dir,
                "precompute": args.precompute, "source": source, "app": _options(args),
                "log_level": args.log_level, "access_log": args.access_log})
        missing = [m for m, ok in (("no --models-dir", models_dir),
                                   (f"no ${TOKEN_ENV}", os.environ.get(TOKEN_ENV))) if not ok]
        reload_state = ("reload off: " + ", ".join(missing) if missing
                        else f"reloads from {models_dir}")
        print(f"serving {what}\n  version {health['version']}: {health['customers']} "
              f"customers, {health['items']} items; {args.workers} worker(s); {reload_state}"
              f"\n  on http://{args.host}:{args.port} (GET /health, GET /recommend/{{customer}}"
              "?k=10, POST /recommend, POST /reload, GET /metrics)", file=sys.stderr,
              flush=True)
        if state_dir is None:
            uvicorn.Server(uvicorn.Config(app, **config)).run()
        else:
            uvicorn.run("companion.ops.serving:worker_app", factory=True, workers=args.workers,
                        **config)
        return 0
    finally:
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m companion.ops.serving``: the same options as ``python -m companion serve``."""
    parser = argparse.ArgumentParser(prog="python -m companion.ops.serving",
                                     description="Serve recommendations over HTTP.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
