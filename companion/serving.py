"""A recommendation service over HTTP (FastAPI on uvicorn), with hot model reload.

Endpoints (JSON):

* ``GET /health``: status, model name, version, numbers of customers and items;
* ``GET /recommend/{customer}?k=10&exclude_seen=false``: the top ``k`` items for one
  customer, addressed by the shop's own id (for example 17850 in Online Retail);
* ``POST /recommend`` with ``{"customers": [...], "k": 10}``: the same for a batch;
* ``POST /reload`` with ``{"artifact": "path"}`` (or no body: the artifact served now): load
  an artifact (:mod:`companion.export`) and swap it in.

Every response carries the served model's ``version`` (model, code hash, data hash).
Customers the model has never seen get the popularity ranking and ``"fallback": true``.
Bad input gets a 4xx answer whose ``error`` names the parameter and the problem.

The served model sits behind one reference (:class:`RecommendationService`). A request
reads that reference once and uses what it read to the end, and a reload builds the new
model completely before it replaces the reference in one assignment, so no request ever
sees half a model and none is dropped while models change.

The service listens on 127.0.0.1 unless told otherwise and has no authentication: put it
behind a gateway that authenticates callers (at least for ``/reload``) before exposing it.
Artifacts are loaded without pickle, so a reload can swap the model but never run code.

``import companion.serving`` is light: FastAPI, uvicorn and TensorFlow are imported only
when an app is built or a Keras artifact is loaded. The command line (wired as
``python -m companion serve``) is :func:`add_arguments` plus :func:`run`; this module also
runs on its own: ``python -m companion.serving --port 8000``.
"""

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from companion import export
from companion import recommenders as rec
from companion._optional import require

DEFAULT_K = 10
MAX_K = 100
MAX_BATCH = 1000


def default_model() -> rec.Recommender:
    """The model ``serve`` fits when given no artifact: the customer's own past items
    (repeat-buy, half-life 90 days) blended with item-kNN, a strong model of chapter 5
    that fits in seconds on the full shop."""
    return rec.Blend(rec.ItemKNN(), weight=4.0)


@dataclass(frozen=True)
class Served:
    """One served model with its version; never changed after it is built."""

    model: rec.Recommender
    version: dict
    source: str
    loaded_at: float = field(default_factory=time.time)
    int_ids: bool = field(init=False)

    def __post_init__(self) -> None:
        self.model._check_fitted()
        kind = self.model.user_encoder_.classes_.dtype.kind
        object.__setattr__(self, "int_ids", kind in "iu")

    @property
    def version_id(self) -> str:
        return export.version_id(self.version)


class RequestError(ValueError):
    """A problem with the request's content (answered with HTTP 422)."""


class RecommendationService:
    """The served model and the logic of the endpoints, without the web layer.

    ``recommend`` here is what a request does once FastAPI has parsed it, so the benchmark
    can time the same work in process and over HTTP.
    """

    def __init__(self, model: rec.Recommender, version: dict, source: str = "") -> None:
        self._served = Served(model, version, source)
        self._reload_lock = threading.Lock()
        self.reloads = 0

    @classmethod
    def from_artifact(cls, path: str | os.PathLike) -> "RecommendationService":
        """A service for an artifact folder written by :mod:`companion.export`."""
        artifact = export.load(path)
        return cls(artifact.model, artifact.version, source=str(Path(path)))

    @property
    def served(self) -> Served:
        """The model served now (read it once per request)."""
        return self._served

    def swap(self, model: rec.Recommender, version: dict, source: str = "") -> Served:
        """Serve ``model`` from now on; returns what was served before. Requests in flight
        finish on the model they started with."""
        new = Served(model, version, source)
        with self._reload_lock:
            old, self._served = self._served, new  # one reference assignment
            self.reloads += 1
        return old

    def reload(self, path: str | os.PathLike | None = None) -> Served:
        """Load an artifact (default: the one served now) and swap it in."""
        source = path if path is not None else self._served.source
        if not source or not (Path(source) / "meta.json").is_file():
            raise RequestError(f"artifact: {source!r} is not an artifact folder "
                               "(it has no meta.json)." if source else
                               "artifact: the served model was not loaded from an artifact; "
                               "name the folder to load.")
        try:
            artifact = export.load(source)  # the slow part, done before the swap
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise RequestError(f"artifact: cannot load {source}: {err}") from None
        self.swap(artifact.model, artifact.version, str(Path(source)))
        return self._served

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

    def recommend(self, customers: Sequence[object], k: int = DEFAULT_K,
                  exclude_seen: bool = False) -> dict:
        """Top-``k`` items for each customer: ``{"version", "k", "results": [{"customer",
        "items", "fallback"}, ...]}``; raises RequestError on bad input."""
        served = self._served  # read once: a reload during this call changes nothing here
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
            raise RequestError(f"k must be an integer from 1 to {MAX_K}, got {k!r}.")
        n_items = len(served.model.item_encoder_)
        if k > n_items:
            raise RequestError(f"k={k} exceeds the catalogue of {n_items} items.")
        if not 1 <= len(customers) <= MAX_BATCH:
            raise RequestError(f"customers must hold 1 to {MAX_BATCH} ids, "
                               f"got {len(customers)}.")
        ids = [self.parse_customer(c, served) for c in customers]
        array = np.asarray(ids, dtype=np.int64 if served.int_ids else object)
        codes = served.model.user_encoder_.transform(array)
        items = served.model.recommend(array, k=int(k), exclude_seen=exclude_seen)
        return {"version": served.version_id, "k": int(k),
                "results": [{"customer": c, "items": [_plain(v) for v in row],
                             "fallback": bool(code < 0)}
                            for c, row, code in zip(ids, items, codes, strict=True)]}

    def health(self) -> dict:
        served = self._served
        return {"status": "ok", "model": type(served.model).__name__,
                "version": served.version_id, "code": served.version["code"],
                "data": served.version["data"], "source": served.source,
                "customers": len(served.model.user_encoder_),
                "items": len(served.model.item_encoder_), "reloads": self.reloads}


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------- web layer


def create_app(service: RecommendationService):
    """The FastAPI application for ``service``."""
    require("fastapi", "serve", load=False)
    from fastapi import Body, FastAPI, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    class BatchRequest(BaseModel):
        customers: list[int | str] = Field(min_length=1, max_length=MAX_BATCH,
                                           description="shop customer ids")
        k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
        exclude_seen: bool = False

    class ReloadRequest(BaseModel):
        artifact: str | None = None

    app = FastAPI(title="companion recommender", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            problems.append(f"{'.'.join(loc) or 'request'}: {err.get('msg')}")
        return JSONResponse(status_code=422, content={
            "error": "; ".join(problems), "version": service.served.version_id})

    @app.exception_handler(RequestError)
    async def _bad(request, exc: RequestError):
        return JSONResponse(status_code=422, content={
            "error": str(exc), "version": service.served.version_id})

    @app.get("/health")
    def health() -> dict:
        return service.health()

    @app.get("/recommend/{customer}")
    def recommend_one(customer: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
                      exclude_seen: bool = False) -> dict:
        out = service.recommend([customer], k=k, exclude_seen=exclude_seen)
        return {"version": out["version"], "k": out["k"], **out["results"][0]}

    @app.post("/recommend")
    def recommend_batch(request: BatchRequest) -> dict:
        return service.recommend(request.customers, k=request.k,
                                 exclude_seen=request.exclude_seen)

    @app.post("/reload")
    def reload(request: Annotated[ReloadRequest | None, Body()] = None) -> dict:
        previous = service.served.version_id
        served = service.reload(request.artifact if request is not None else None)
        return {"version": served.version_id, "previous": previous, "source": served.source}

    return app


def _free_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(service: RecommendationService, host: str = "127.0.0.1",
                    timeout: float = 30.0) -> Iterator[str]:
    """Run the service on a free port of ``host`` in a background thread; yields its base
    URL (``http://127.0.0.1:PORT``) and stops the server when the block ends."""
    uvicorn = require("uvicorn", "serve")

    sock = _free_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(service), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
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
                        timeout: float = 120.0, env: dict | None = None) -> Iterator[str]:
    """Run ``python -m companion.serving --artifact ARTIFACT`` on a free port of ``host`` in
    its own process (its own interpreter, so no lock is shared with the caller); yields the
    base URL and terminates the process when the block ends."""
    httpx = require("httpx", "serve")

    with _free_socket(host) as sock:
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "companion.serving", "--artifact", str(artifact),
           "--host", host, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with code {proc.returncode}: "
                                   f"{proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer on {url} within {timeout} s.")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


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
                        help="a model folder written by companion.export (default: fit "
                             "repeat-buy + item-kNN on the data directory, or on the "
                             "synthetic shop when no data is found)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the Online Retail files (default: "
                             "$COMPANION_DATA_DIR, then the user cache; never downloads)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def default_service(data_dir: str | os.PathLike | None = None
                    ) -> tuple[RecommendationService, str]:
    """Fit :func:`default_model` on the Online Retail II data found locally (never
    downloaded), or on the synthetic shop; returns the service and a description."""
    from companion import data, preprocessing

    shop = data.load_shop(version="II", data_dir=data_dir, download=False)
    transactions = preprocessing.clean_transactions(shop.transactions).transactions
    interactions = preprocessing.to_interactions(transactions)
    model = default_model().fit(interactions)
    where = "Online Retail II" if shop.is_real else "the synthetic shop (no data found)"
    source = f"{model!r} fitted on {where}"
    version = export.model_version(interactions, "repeat-buy+item-kNN")
    return RecommendationService(model, version, source=source), source


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C); returns the exit code."""
    try:
        require("fastapi", "serve", load=False)
        uvicorn = require("uvicorn", "serve")
    except ModuleNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"--port must be 1 to 65535, got {args.port}.", file=sys.stderr)
        return 2
    if args.artifact is not None:
        try:
            service = RecommendationService.from_artifact(args.artifact)
        except (FileNotFoundError, ValueError) as err:
            print(f"cannot serve --artifact {args.artifact}: {err}", file=sys.stderr)
            return 2
        what = f"the artifact {args.artifact}"
    else:
        service, what = default_service(args.data_dir)
    health = service.health()
    print(f"serving {what}\n  version {health['version']}: {health['customers']} customers, "
          f"{health['items']} items\n  on http://{args.host}:{args.port} "
          "(GET /health, GET /recommend/{customer}?k=10, POST /recommend, POST /reload)",
          flush=True)
    config = uvicorn.Config(create_app(service), host=args.host, port=args.port,
                            log_level=args.log_level, lifespan="off")
    uvicorn.Server(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m companion.serving``: the same options as ``python -m companion serve``."""
    parser = argparse.ArgumentParser(prog="python -m companion.serving",
                                     description="Serve recommendations over HTTP.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
