"""The retention simulator: calibration, determinism, common random numbers, a planted
effect recovered, metrics by hand and clear errors."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.recsys import baselines as rec
from companion.retention import simulation as sim


@pytest.fixture(scope="module")
def world():
    frame = data.synthetic_shop(n_customers=600, n_products=150, months=24,
                                start="2009-12-01", seed=3)
    interactions = preprocessing.to_interactions(
        preprocessing.clean_transactions(frame).transactions)
    return sim.calibrate(interactions, dim=8, choice_visits=300), interactions


def popularity():
    return sim.RecommenderPolicy("popularity", functools.partial(rec.Popularity))


def test_calibrated_world(world):
    world, interactions = world
    assert world.n_users == interactions["user_id"].nunique()
    assert world.taste.shape == (world.n_users, 8)
    assert world.item_vectors.shape == (world.n_items, 8)
    # the fitted choice model explains baskets better than popularity alone
    assert world.choice.log_likelihood > world.choice.baseline_log_likelihood
    # buying an item before makes buying it again more likely; the season matters
    assert world.choice.repeat > 0
    table = world.hazard.table()
    assert set(table["term"]) >= {"gap", "recent", "season", "newcomer"}
    assert world.summary().loc["customers", "value"] == world.n_users


def test_simulation_is_deterministic(world):
    world, _ = world
    a = sim.simulate(world, popularity(), start=52, weeks=20, seed=4)
    b = sim.simulate(world, popularity(), start=52, weeks=20, seed=4)
    pd.testing.assert_frame_equal(a.visits, b.visits)
    pd.testing.assert_frame_equal(a.lines, b.lines)
    c = sim.simulate(world, popularity(), start=52, weeks=20, seed=5)
    assert not a.visits.equals(c.visits)


def test_without_relevance_effect_every_policy_retains_the_same(world):
    world, _ = world
    off = sim.Assumptions(relevance_effect=0.0)
    runs = [sim.simulate(world, policy, start=52, weeks=30, seed=1, assumptions=off)
            for policy in (sim.NoRecommendations(), sim.RandomSlates(), popularity())]
    for run in runs[1:]:
        np.testing.assert_array_equal(run.active, runs[0].active)  # common random numbers
    assert runs[2].visits["hits"].mean() > runs[1].visits["hits"].mean()  # yet they differ


def test_relevant_slates_bring_customers_back(world):
    world, _ = world
    on = sim.Assumptions(relevance_effect=3.0)
    none = sim.simulate(world, sim.NoRecommendations(), start=52, weeks=40, seed=2,
                        assumptions=on)
    shown = sim.simulate(world, popularity(), start=52, weeks=40, seed=2, assumptions=on)
    assert shown.active[:, 52:].sum() > 1.1 * none.active[:, 52:].sum()


def test_planted_effect_is_recovered(world):
    world, _ = world
    planted = 3.0
    run = sim.simulate(world, popularity(), start=52, weeks=52, seed=0,
                       assumptions=sim.Assumptions(relevance_effect=planted))
    estimate = sim.estimate_relevance_effect(world, run)
    assert abs(estimate - planted) < 0.35 * planted


def test_exploration_fills_the_last_slots_from_the_tail(world):
    world, _ = world
    policy = sim.Exploration(popularity(), slots=3, head=20)
    run = sim.simulate(world, policy, start=52, weeks=8, seed=0)
    head = set(run.shown[:, :7].ravel())
    tail = run.shown[:, 7:]
    assert all(len(set(row)) == 10 for row in run.shown)
    assert len(set(tail.ravel())) > len(head)  # the tail spreads over many products
    with pytest.raises(ValueError, match="slots=10"):
        sim.simulate(world, sim.Exploration(popularity(), slots=10), start=52, weeks=2)


def test_simulate_many_matches_single_runs(world):
    world, _ = world
    summarise = functools.partial(sim.own_log_summary, cutoff=59)
    many = sim.simulate_many(world, [popularity()], [0, 1], start=52, weeks=20,
                             summarise=summarise, progress=False)
    one = sim.simulate(world, popularity(), start=52, weeks=20, seed=1)
    assert many["popularity", 1]["90-day churn"] == sim.run_summary(world, one, 59)[
        "90-day churn"]
    assert 0 <= many["popularity", 0]["own-log NDCG all"] <= 1


def test_metrics_by_hand():
    active = np.array([[1, 0, 1, 0, 0, 0],
                       [0, 1, 0, 0, 1, 0],
                       [1, 1, 1, 1, 1, 1],
                       [0, 0, 0, 0, 0, 0]], dtype=bool)
    rate, n = sim.churn_rate(active, 3, horizon=2, lookback=3)
    assert n == 3 and rate == pytest.approx(1 / 3)  # customer 0 bought in weeks 0-2, not 3-4
    gaps = sim.gap_histogram(active, 0, 6, edges=(1, 2, 3))
    # gaps: customer 0: 2; customer 1: 3; customer 2: five gaps of 1
    np.testing.assert_allclose(gaps.to_numpy(), [5 / 7, 1 / 7, 1 / 7])
    first = np.array([0, 1, 0, 9])
    retained = sim.cohort_retention(active, first, 0, 6, months=2, weeks_per_month=1)
    # cohort week 0 (customers 0 and 2): week 1 -> 1/2, week 2 -> 2/2;
    # cohort week 1 (customer 1): week 2 -> 0, week 3 -> 0; pooled over 3 customers
    np.testing.assert_allclose(retained.to_numpy(), [1 / 3, 2 / 3])
    assert sim.gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    assert sim.gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    assert sim.gap_bin(np.array([1, 4, 5, 52, 53, 200])).tolist() == [0, 3, 4, 9, 10, 10]


def test_churn_rate_windows():
    # cutoff week 57 of 70: at risk if active in weeks 5-56, churned if inactive in 57-69
    active = np.zeros((5, 70), dtype=bool)
    active[0, 4] = True                  # 53 weeks back: outside the 52-week lookback
    active[1, 5] = True                  # exactly 52 weeks back: at risk, then gone
    active[2, [56, 69]] = True           # back in the last week of the horizon
    active[3, [56, 57]] = True           # back in the cutoff week itself
    active[4, 57] = True                 # first seen at the cutoff: not at risk
    rate, n = sim.churn_rate(active, 57)
    assert n == 3 and rate == pytest.approx(1 / 3)
    assert sim.churn_rate(active, 57, horizon=12) == (pytest.approx(2 / 3), 3)
    assert sim.churn_rate(active, 57, lookback=53) == (pytest.approx(2 / 4), 4)
    # the horizon must fit in the weeks given, the lookback before the cutoff
    with pytest.raises(ValueError, match="cutoff=58 needs 52 weeks before it and 13 after"):
        sim.churn_rate(active, 58)
    with pytest.raises(ValueError, match="cutoff=51 needs 52 weeks before it"):
        sim.churn_rate(active, 51)


def test_calibration_table_flags_misses():
    real = {"churn": 0.5, "gaps": pd.Series([0.6, 0.4], index=["1", "2+"])}
    simulated = [{"churn": c, "gaps": pd.Series([0.6, g], index=["1", "2+"])}
                 for c, g in ((0.49, 0.41), (0.51, 0.39), (0.50, 0.40))]
    table = sim.calibration_table(real, simulated)
    assert table.loc["churn", "inside"] and table.loc["gaps: 2+", "inside"]
    far = sim.calibration_table({"churn": 0.9, "gaps": real["gaps"]}, simulated)
    assert not far.loc["churn", "inside"]
    with pytest.raises(ValueError, match="two simulated runs"):
        sim.calibration_table(real, simulated[:1])


def test_bad_parameters(world):
    world, interactions = world
    with pytest.raises(ValueError, match="relevance_effect"):
        sim.Assumptions(relevance_effect=-1.0)
    with pytest.raises(ValueError, match="relevance_memory"):
        sim.Assumptions(relevance_memory=0.0)
    with pytest.raises(ValueError, match="slate_size"):
        sim.Assumptions(slate_size=0)
    with pytest.raises(ValueError, match="start=10"):
        sim.simulate(world, sim.NoRecommendations(), start=10)
    with pytest.raises(TypeError, match="Policy"):
        sim.simulate(world, rec.Popularity(), start=52)
    with pytest.raises(ValueError, match="fit_weeks"):
        sim.calibrate(interactions, fit_weeks=(13, 40))
    with pytest.raises(ValueError, match="fit_weeks"):
        sim.calibrate(interactions, fit_weeks=(5, 70))
    with pytest.raises(ValueError, match="unique"):
        sim.simulate_many(world, [popularity(), popularity()], [0], start=52,
                          summarise=sim.own_log_summary)
    with pytest.raises(ValueError, match="cutoff"):
        sim.churn_rate(np.zeros((2, 10), dtype=bool), 5)
