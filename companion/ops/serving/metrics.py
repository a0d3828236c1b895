"""The service's request metrics, shared by its worker processes, in Prometheus text."""

import bisect
import os
import threading
from pathlib import Path

import numpy as np

from companion.ops.serving.served import Served

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
#: positions of the service's own counters and gauges in a :class:`Metrics` vector (for
#: :meth:`~companion.ops.serving.metrics.Metrics.add` and
#: :meth:`~companion.ops.serving.metrics.Metrics.set`)
(FALLBACKS, UNKNOWN_ITEMS, RELOADS_OK, RELOADS_FAILED, GENERATION, IN_FLIGHT,
 LOADED_AT, _PID) = range(_SUMS + len(ROUTES), _SUMS + len(ROUTES) + 8)
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
            table[slot, IN_FLIGHT] = 0.0
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
        """Add ``amount`` to the counter at position ``index`` (for example
        :data:`FALLBACKS`)."""
        with self._lock:
            self.values[index] += amount

    def set(self, index: int, value: float) -> None:
        """Set the gauge at position ``index`` (for example :data:`GENERATION`)."""
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
                ("companion_recommendation_fallbacks_total", FALLBACKS,
                 "Recommendations answered with the popularity fallback (customer unknown "
                 "and no known product in the history)."),
                ("companion_history_unknown_items_total", UNKNOWN_ITEMS,
                 "Products in request histories that the served model does not know."),
        ):
            metric(name, "counter", text)
            lines.append(f"{name} {total[index]:.0f}")
        metric("companion_model_reloads_total", "counter",
               "Model reloads by the workers, by result.")
        lines.append(f'companion_model_reloads_total{{result="ok"}} {total[RELOADS_OK]:.0f}')
        lines.append(f'companion_model_reloads_total{{result="failed"}} '
                     f"{total[RELOADS_FAILED]:.0f}")
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
                         f"{self.table[slot, GENERATION]:.0f}")
        metric("companion_requests_in_flight", "gauge", "Requests being answered now.")
        lines.append("companion_requests_in_flight "
                     f"{sum(self.table[s, IN_FLIGHT] for s in live):.0f}")
        return "\n".join(lines) + "\n"
