"""The web layer: the ASGI app over a
:class:`~companion.ops.serving.service.RecommendationService`, and servers for tests."""

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from companion._optional import require
from companion.ops.serving.config import (
    DEFAULT_K,
    MAX_BATCH,
    MAX_BODY,
    MAX_HISTORY,
    MAX_K,
    RELOAD_TIMEOUT,
    REQUEST_ID,
    REQUEST_TIMEOUT,
    TOKEN_ENV,
    Forbidden,
    RequestError,
    Unauthorized,
    access_log,
    log,
)
from companion.ops.serving.metrics import FALLBACKS, IN_FLIGHT, route_of
from companion.ops.serving.service import RecommendationService


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
                if REQUEST_ID.fullmatch(text):
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
        metrics.add(IN_FLIGHT, 1)
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
            metrics.add(IN_FLIGHT, -1)
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
            service.metrics.add(FALLBACKS)
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
