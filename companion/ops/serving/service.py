"""The recommendation service: the served model behind one reference, reloads and answers."""

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from companion.ops import export
from companion.ops.serving.config import (
    DEFAULT_K,
    DEFAULT_PRECOMPUTE,
    MAX_BATCH,
    MAX_HISTORY,
    MAX_K,
    Forbidden,
    RequestError,
    log,
)
from companion.ops.serving.metrics import (
    FALLBACKS,
    GENERATION,
    LOADED_AT,
    RELOADS_FAILED,
    RELOADS_OK,
    UNKNOWN_ITEMS,
    Metrics,
)
from companion.ops.serving.served import Served, plain_value
from companion.recsys import baselines as rec


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
        self.metrics.set(LOADED_AT, self._served.loaded_at)
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
        self.metrics.add(RELOADS_OK)
        self.metrics.set(GENERATION, new.generation)
        self.metrics.set(LOADED_AT, new.loaded_at)
        if self.freeze_gc:  # the old model is freed when its last request ends
            freeze_gc()
        return old

    # -- reloads ------------------------------------------------------------------------
    def resolve_artifact(self, name: object = None) -> Path:
        """The artifact folder ``name`` names inside the models folder (default: the one
        served now); raises :class:`~companion.ops.serving.config.Forbidden` for anything
        outside it and RequestError when it holds no artifact. Messages never show the
        server's paths."""
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
                self.metrics.add(RELOADS_FAILED)
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
                self.metrics.add(RELOADS_FAILED)
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
        return len(live), int(sum(self.metrics.table[s, GENERATION] >= generation
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
        self.metrics.add(FALLBACKS, sum(r["fallback"] for r in results))
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
        self.metrics.add(FALLBACKS, fallback)
        self.metrics.add(UNKNOWN_ITEMS, len(unknown))
        return {"version": served.version_id, "k": k, "customer": user_id,
                "items": [plain_value(v) for v in items], "fallback": fallback,
                "unknown_items": unknown}

    def health(self) -> dict:
        served = self._served
        return {"status": "ok", "model": type(served.model).__name__,
                "version": served.version_id, "code": served.version["code"],
                "data": served.version["data"], "source": served.source,
                "customers": served.n_customers, "items": served.n_items,
                "precomputed": len(served.rows), "history": served.supports_history,
                "reloads": self.reloads, "generation": served.generation}


def freeze_gc() -> None:
    """Collect, then move every object alive now (the model, the precomputed lists, the
    libraries) out of the garbage collector's sight (``gc.freeze()``): a full collection
    then scans only what requests allocate, instead of pausing every request for a scan
    of the whole heap (a few hundred milliseconds with a model loaded). Called by the
    server process after each load, never by a library user's process."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()
