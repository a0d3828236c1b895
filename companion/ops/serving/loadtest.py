"""A bounded load test of a running service."""

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from companion._optional import require
from companion.ops.serving.config import DEFAULT_K


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
