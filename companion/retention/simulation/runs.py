"""Many runs (seeds and policies, in worker processes) and the offline metrics of their logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from companion._checks import check_positive_int
from companion.retention.simulation.assumptions import Assumptions
from companion.retention.simulation.engine import SimulationResult, as_interactions, simulate
from companion.retention.simulation.measures import run_summary
from companion.retention.simulation.policies import Policy
from companion.retention.simulation.world import ShopWorld


class BlendWith:
    """``wrap`` for :class:`~companion.retention.simulation.policies.RecommenderPolicy`:
    blend the fitted model with a fresh ``base_factory()`` (see
    :class:`companion.recsys.baselines.Blend`); picklable, so that runs can go to worker
    processes."""

    def __init__(self, base_factory: Callable[[], object], weight: float) -> None:
        self.base_factory, self.weight = base_factory, weight

    def __call__(self, model):
        from companion.recsys.baselines import Blend

        return Blend(model, weight=self.weight, base=self.base_factory())

    def __repr__(self) -> str:
        return f"BlendWith({self.base_factory!r}, weight={self.weight!r})"


def logged_interactions(world: ShopWorld, result: SimulationResult) -> pd.DataFrame:
    """The log a shop would hold after a run: real purchases before the run, then the
    simulated ones, in the companion's interactions schema."""
    return pd.concat([world.history(result.start), as_interactions(world, result.lines)],
                     ignore_index=True)


def final_window_task(world: ShopWorld, result: SimulationResult, *, test_weeks: int = 4,
                      history_weeks: int | None = None):
    """Chapter 5's protocol on a run's log: the last ``test_weeks`` weeks are the test
    window, the ``history_weeks`` before them (default: the run's) the training data."""
    from companion.recsys.ranking import RankingTask

    history_weeks = (result.assumptions.history_weeks if history_weeks is None
                     else history_weeks)
    log = logged_interactions(world, result)
    cut = world.date(result.end - test_weeks)
    train = log[(log["timestamp"] < cut)
                & (log["timestamp"] >= cut - pd.Timedelta(weeks=history_weeks))]
    return RankingTask.from_split(train, log[log["timestamp"] >= cut],
                                  f"simulated log of {result.policy!r}, seed {result.seed}")


def offline_ndcg(model, task, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k of a fitted recommender on both tasks of ``task``."""
    from companion.recsys import ranking

    return {name: float(frame["NDCG"].mean())
            for name, frame in ranking.evaluate(model, task, k=k).items()}


def own_log_summary(world: ShopWorld, result: SimulationResult, policy: Policy,
                    cutoff: int) -> dict[str, object]:
    """:func:`~companion.retention.simulation.measures.run_summary` plus the offline NDCG@10
    of the policy's last model on the weeks of its own log that it was not trained on (the
    weeks after its last refit)."""
    summary = run_summary(world, result, cutoff)
    if getattr(policy, "scorer_", None) is not None:
        last_refit = result.start + (result.weeks - 1) // result.assumptions.retrain_weeks \
            * result.assumptions.retrain_weeks
        task = final_window_task(world, result, test_weeks=result.end - last_refit)
        summary.update({f"own-log NDCG {k}": v
                        for k, v in offline_ndcg(policy.scorer_, task).items()})
    return summary


_WORLD: ShopWorld | None = None


def _load_world(path: str) -> None:
    import pickle

    global _WORLD
    with open(path, "rb") as fh:
        _WORLD = pickle.load(fh)


def _run_one(job):
    policy, seed, start, weeks, assumptions, summarise = job
    result = simulate(_WORLD, policy, start=start, weeks=weeks, assumptions=assumptions,
                      seed=seed)
    return summarise(_WORLD, result, policy)


def simulate_many(world: ShopWorld, policies: Sequence[Policy], seeds: Sequence[int], *,
                  start: int, weeks: int = 52, assumptions: Assumptions | None = None,
                  summarise: Callable[[ShopWorld, SimulationResult, Policy], object],
                  processes: int = 1, progress: bool = True) -> dict[tuple[str, int], object]:
    """Run every policy with every seed and keep ``summarise(world, result, policy)`` of
    each run, keyed by ``(policy name, seed)``.

    With ``processes > 1`` the runs are shared among that many worker processes (started
    fresh, so policies and ``summarise`` must be picklable: no lambdas); results do not
    depend on the number of processes.
    """
    import pickle
    import tempfile

    from tqdm.auto import tqdm

    check_positive_int(processes, name="processes")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique, got {names}.")
    jobs = [(policy, seed, start, weeks, assumptions, summarise)
            for policy in policies for seed in seeds]
    keys = [(policy.name, seed) for policy in policies for seed in seeds]
    bar = tqdm(total=len(jobs), desc="simulations", disable=not progress, leave=False)
    out = {}
    if processes == 1:
        global _WORLD
        previous, _WORLD = _WORLD, world
        try:
            for key, job in zip(keys, jobs, strict=True):
                out[key] = _run_one(job)
                bar.update()
        finally:
            _WORLD = previous
        bar.close()
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/world.pkl"
        with open(path, "wb") as fh:
            pickle.dump(world, fh)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_load_world,
                                 initargs=(path,)) as pool:
            futures = {pool.submit(_run_one, job): key
                       for key, job in zip(keys, jobs, strict=True)}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update()
    bar.close()
    return {key: out[key] for key in keys}
