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

**Speed.** When a model is loaded, the top :data:`~companion.ops.serving.config.MAX_K` lists
of every known customer (up to ``precompute`` customers, the most active first), with and
without the items they bought, and the popularity fallback for every ``k`` are computed
once, in chunks, and the JSON of every item id is written out once. ``GET /recommend`` for
such a customer is then a dictionary look-up and a string join in the event loop, with no
model call and no thread hand-off; the answer is the first ``k`` of the stored list.
Anything else (a history, a customer beyond the precomputed ones) calls the model in a
worker thread.

**Reloads.** The served model sits behind one reference
(:class:`~companion.ops.serving.service.RecommendationService`). A request reads that
reference once and uses what it read to the end, and a reload builds the new model,
precomputed lists included, completely before it replaces the reference in one assignment,
so no request ever sees half a model and none is dropped while models change. With several
worker processes (``--workers``), the worker that performed a reload publishes it in a
version file of the service's state folder; every other worker watches that file, loads the
same artifact and swaps it in the same way, and a worker that starts later (a restart)
begins on the latest published artifact. The reload's answer says how many workers serve the
new version.

**Security.** ``/reload`` is switched off (403) unless the environment variable
``COMPANION_RELOAD_TOKEN`` (or ``reload_token``) holds a token, and needs that token as a
bearer token (401 otherwise). It loads only artifact folders inside the configured models
folder (``--models-dir``; by default the folder that holds the ``--artifact`` served at
start-up); other paths, symbolic links that leave the folder included, are refused with 403.
Artifacts are loaded without pickle, so a reload can swap the model but never run code.
Request bodies are limited (:data:`~companion.ops.serving.config.MAX_BODY` bytes; 413) and
so is each request's time (:data:`~companion.ops.serving.config.REQUEST_TIMEOUT` seconds,
:data:`~companion.ops.serving.config.RELOAD_TIMEOUT` for a reload; 503). The service listens
on 127.0.0.1 unless told otherwise.

**Operations.** Each request gets an id (the caller's ``X-Request-ID`` when it is a
plain token of at most 128 characters, else a new one), returned in the ``X-Request-ID``
header, quoted in error answers and written to a structured access log: one JSON object
per line on standard output (logger ``companion.access``). On SIGTERM or Ctrl-C uvicorn
stops accepting connections and finishes the requests in flight (up to
``--graceful-timeout`` seconds) before the process exits.

**Modules.** :mod:`~companion.ops.serving.config` (limits, settings and errors),
:mod:`~companion.ops.serving.served` (one loaded model and its precomputed answers),
:mod:`~companion.ops.serving.metrics`, :mod:`~companion.ops.serving.service` (the model
behind one reference, and reloads), :mod:`~companion.ops.serving.web` (the ASGI app and
test servers), :mod:`~companion.ops.serving.loadtest` and
:mod:`~companion.ops.serving.cli`; every public name is importable from this package.

``import companion.ops.serving`` is light: FastAPI, uvicorn and TensorFlow are imported only
when an app is built or a Keras artifact is loaded. The command line (wired as ``python -m
companion serve``) is :func:`~companion.ops.serving.cli.add_arguments` plus
:func:`~companion.ops.serving.cli.run`; this module also runs on its own: ``python -m
companion.ops.serving --port 8000``."""

from companion.ops.serving.cli import add_arguments, default_service, main, run, worker_app
from companion.ops.serving.config import (
    DEFAULT_K,
    DEFAULT_PRECOMPUTE,
    MAX_BATCH,
    MAX_BODY,
    MAX_HISTORY,
    MAX_K,
    MODELS_ENV,
    RELOAD_TIMEOUT,
    REQUEST_TIMEOUT,
    TOKEN_ENV,
    Forbidden,
    RequestError,
    Unauthorized,
    access_log,
    default_model,
    log,
)
from companion.ops.serving.loadtest import HttpRequester, load_test
from companion.ops.serving.metrics import BUCKETS, MAX_WORKERS, ROUTES, STATUSES, Metrics, route_of
from companion.ops.serving.served import Served
from companion.ops.serving.service import RecommendationService
from companion.ops.serving.web import Gateway, create_app, serve_in_subprocess, serve_in_thread

__all__ = [
    "BUCKETS", "DEFAULT_K", "DEFAULT_PRECOMPUTE", "MAX_BATCH", "MAX_BODY", "MAX_HISTORY",
    "MAX_K", "MAX_WORKERS", "MODELS_ENV", "RELOAD_TIMEOUT", "REQUEST_TIMEOUT", "ROUTES",
    "STATUSES", "TOKEN_ENV", "Forbidden", "Gateway", "HttpRequester", "Metrics",
    "RecommendationService", "RequestError", "Served", "Unauthorized", "access_log",
    "add_arguments", "create_app", "default_model", "default_service", "load_test", "log",
    "main", "route_of", "run", "serve_in_subprocess", "serve_in_thread", "worker_app",
]
