"""The command line of the service (``python -m companion serve``) and its worker processes."""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from companion._optional import require
from companion.ops import export
from companion.ops.serving.config import (
    DEFAULT_PRECOMPUTE,
    MAX_BODY,
    MODELS_ENV,
    RELOAD_TIMEOUT,
    REQUEST_TIMEOUT,
    TOKEN_ENV,
    WORKER_ENV,
    access_log,
    default_model,
    log,
)
from companion.ops.serving.metrics import MAX_WORKERS
from companion.ops.serving.service import RecommendationService, freeze_gc
from companion.ops.serving.web import Gateway, create_app
from companion.recsys import baselines as rec


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
    """Fit :func:`~companion.ops.serving.config.default_model` on the Online Retail II
    data found locally (never downloaded), or on the synthetic shop; returns the service
    and a description."""
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
    config = json.loads(os.environ[WORKER_ENV])
    _configure_logging(config["log_level"], config["access_log"])
    service = RecommendationService.from_artifact(
        config["artifact"], models_dir=config["models_dir"], precompute=config["precompute"],
        state_dir=config["state_dir"], source=config["source"], freeze_gc=True)
    freeze_gc()
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
            freeze_gc()
        else:
            health = {"version": export.version_id(version),
                      "customers": len(model.user_encoder_), "items": len(model.item_encoder_)}
            del model
            os.environ[WORKER_ENV] = json.dumps({
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

