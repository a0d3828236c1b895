"""Tests of companion.apps.bandits: policies on synthetic Bernoulli problems, the logging
policy and the off-policy estimators on logs with a known policy value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.apps import bandits as b

RATES = np.array([0.2, 0.5, 0.35, 0.1])


def bernoulli(n: int, rates=RATES, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, len(rates))) < rates).astype(float)


@pytest.mark.parametrize("policy", [b.EpsilonGreedy(4, 0.1), b.ThompsonSampling(4),
                                    b.LinUCB(4, 1, alpha=0.5)],
                         ids=["epsilon-greedy", "thompson", "linucb"])
def test_policies_recover_the_best_arm(policy):
    r = bernoulli(4000)
    trace = b.run_online(policy, r, seed=1)
    late = trace.arms[-1000:]
    assert np.mean(late == 1) > 0.85
    assert trace.value > RATES[[0, 2, 3]].max()  # beats every suboptimal fixed arm


def test_thompson_regret_below_epsilon_greedy_on_a_stationary_problem():
    regrets = {"eps": [], "ts": []}
    for seed in range(5):
        r = bernoulli(3000, seed=seed)
        for name, pol in (("eps", b.EpsilonGreedy(4, 0.1)), ("ts", b.ThompsonSampling(4))):
            trace = b.run_online(pol, r, seed=seed)
            regrets[name].append(b.cumulative_regret(trace, r, 1)[-1])
    assert np.mean(regrets["ts"]) < np.mean(regrets["eps"])


def test_linucb_uses_the_context():
    rng = np.random.default_rng(0)
    n = 4000
    group = rng.integers(0, 2, n)
    x = np.column_stack([np.ones(n), group])
    rates = np.where(group[:, None] == 1, [0.1, 0.6], [0.6, 0.1])
    r = (rng.random((n, 2)) < rates).astype(float)
    lin = b.run_online(b.LinUCB(2, 2, alpha=0.5), r, x, seed=0)
    best_fixed = r.mean(axis=0).max()
    assert lin.value > best_fixed + 0.15
    with pytest.raises(ValueError, match="context has 3 features"):
        b.LinUCB(2, 2).select(np.ones(3), None)


def test_lin_ucb_sherman_morrison_matches_direct_inverse():
    rng = np.random.default_rng(3)
    pol = b.LinUCB(2, 3, ridge=2.0)
    xs = rng.normal(size=(20, 3))
    for x in xs:
        pol.update(0, 1.0, x)
    direct = np.linalg.inv(2.0 * np.eye(3) + xs.T @ xs)
    np.testing.assert_allclose(pol.A_inv[0], direct, atol=1e-10)
    np.testing.assert_allclose(pol.theta[0], direct @ xs.sum(axis=0), atol=1e-10)


def test_log_policy_draws_arms_with_the_stated_probabilities():
    r = bernoulli(20000)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    log = b.log_policy(r, p, seed=0)
    np.testing.assert_allclose(np.bincount(log.arms, minlength=4) / len(r), p, atol=0.015)
    np.testing.assert_allclose(log.propensity, p[log.arms])
    np.testing.assert_array_equal(log.rewards, r[np.arange(len(r)), log.arms])


def test_estimators_are_unbiased_for_a_known_policy_value():
    r = bernoulli(2000, seed=11)
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, len(r))          # a fixed, deterministic policy
    truth = b.policy_value(target, r)
    uniform = np.full(4, 0.25)
    skewed = b.greedy_logging(4, favourite=1, explore=0.3)
    est = {"replay": [], "ips": [], "snips": [], "ips skewed": []}
    for seed in range(200):
        log = b.log_policy(r, uniform, seed=seed)
        est["replay"].append(b.replay_fixed(target, log))
        est["ips"].append(b.ips(target, log))
        est["snips"].append(b.snips(target, log))
        est["ips skewed"].append(b.ips(target, b.log_policy(r, skewed, seed=seed)))
    for name, values in est.items():
        se = np.std(values) / np.sqrt(len(values))
        assert abs(np.mean(values) - truth) < 4 * se + 1e-3, name


def test_naive_replay_is_biased_under_non_uniform_logging():
    # target shows arm 0 where a covariate says so; the logger favours arm 0 exactly on
    # the events where arm 0 pays: replay then overstates the target's value
    n = 4000
    r = np.zeros((n, 2))
    r[: n // 2, 0] = 1
    r[n // 2:, 1] = 1
    probs = np.where(np.arange(n)[:, None] < n // 2, [0.9, 0.1], [0.5, 0.5])
    target = np.zeros(n, dtype=int)
    truth = b.policy_value(target, r)
    reps = [b.replay_fixed(target, b.log_policy(r, probs, seed=s)) for s in range(20)]
    ipss = [b.ips(target, b.log_policy(r, probs, seed=s)) for s in range(20)]
    assert np.mean(reps) > truth + 0.1
    assert abs(np.mean(ipss) - truth) < 0.03


def test_learning_replay_on_uniform_log_matches_online_value():
    r = bernoulli(40000, seed=5)
    log = b.log_policy(r, np.full(4, 0.25), seed=2)
    rep = b.replay(b.ThompsonSampling(4), log, seed=0)
    assert 0.2 < len(rep.events) / len(r) < 0.3
    online = b.run_online(b.ThompsonSampling(4), r[:len(rep.events)], seed=0)
    assert abs(rep.value - online.value) < 0.03


def test_stochastic_target_and_effective_sample_size():
    r = bernoulli(5000)
    log = b.log_policy(r, np.full(4, 0.25), seed=0)
    probs = np.array([0.1, 0.6, 0.2, 0.1])
    assert abs(b.ips(probs, log) - b.policy_value(probs, r)) < 0.03
    ess = b.effective_sample_size(probs, log)
    assert 0 < ess < len(r)
    assert b.effective_sample_size(np.full(4, 0.25), log) == pytest.approx(len(r))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="0/1"):
        b.run_online(b.ThompsonSampling(2), np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 arms"):
        b.run_online(b.ThompsonSampling(2), np.ones((3, 1)))
    with pytest.raises(ValueError, match="sum to 1"):
        b.log_policy(np.ones((3, 2)), [0.3, 0.3])
    with pytest.raises(ValueError, match="epsilon"):
        b.EpsilonGreedy(3, 1.5)
    with pytest.raises(ValueError, match="n_arms"):
        b.ThompsonSampling(1)
    with pytest.raises(ValueError, match="arm must be"):
        b.FixedArm(3, 3)
    with pytest.raises(ValueError, match="rewards have 2 arms"):
        b.run_online(b.ThompsonSampling(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="contexts must be"):
        b.run_online(b.LinUCB(2, 2), np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="explore"):
        b.greedy_logging(3, 0, 1.0)
    with pytest.raises(ValueError, match="bad pattern"):
        b.categorise(pd.Series(["A"]), {"broken": "("})


def test_visit_log_contexts_use_only_earlier_visits(clean_shop):
    tx = clean_shop.transactions
    start = tx["invoice_date"].min() + pd.Timedelta(days=60)
    log = b.visit_log(tx, start, {"bags": r"BAG|SHOPPER", "candles": r"CANDLE|T-LIGHT"})
    n = len(log.visits)
    assert log.rewards.shape == (n, 2) and log.contexts.shape == (n, len(log.features))
    assert log.visits["timestamp"].is_monotonic_increasing
    assert (log.visits["timestamp"] >= start).all()
    # the share features of a visit equal the mean reward of that customer's earlier visits
    full = b.visit_log(tx, tx["invoice_date"].min(), {"bags": r"BAG|SHOPPER",
                                                      "candles": r"CANDLE|T-LIGHT"})
    cust = full.visits["customer_id"].to_numpy()
    c = pd.Series(cust).value_counts().index[0]
    rows = np.flatnonzero(cust == c)
    share = full.contexts[rows, full.features.index("share bags")]
    expected = [full.rewards[rows[:i], 0].mean() if i else 0.0 for i in range(len(rows))]
    np.testing.assert_allclose(share, expected)
    with pytest.raises(ValueError, match="description"):
        b.visit_log(tx.drop(columns="description"), start)


def test_off_policy_estimators_by_hand():
    log = b.Log(arms=np.array([0, 1, 0, 1]), rewards=np.array([1, 0, 0, 1]),
                propensity=np.array([0.5, 0.25, 0.5, 0.25]))
    target = np.array([0, 0, 0, 1])              # matches the log on events 0, 2 and 3
    # weights target / propensity: 2, 0, 2, 4; weighted rewards 2, 0, 0, 4
    assert b.ips(target, log) == pytest.approx(6 / 4)
    assert b.snips(target, log) == pytest.approx(6 / 8)
    assert b.replay_fixed(target, log) == pytest.approx(2 / 3)
    assert b.effective_sample_size(target, log) == pytest.approx(8 ** 2 / (4 + 4 + 16))
    # the same policy given as probabilities (integers here), per event or as one vector
    one_hot = np.eye(2, dtype=int)[target]
    assert b.ips(one_hot, log) == pytest.approx(6 / 4)
    assert b.snips(one_hot, log) == pytest.approx(6 / 8)
    assert b.snips(np.array([0.5, 0.5]), log) == pytest.approx((1 * 1 + 2 * 1) / (1 + 2 + 1 + 2))
    # a target that never shows a logged arm: no weight anywhere
    never = np.array([1, 0, 1, 0])
    assert b.ips(never, log) == 0.0 and np.isnan(b.snips(never, log))
    assert np.isnan(b.replay_fixed(never, log)) and b.effective_sample_size(never, log) == 0.0
    # weights summing to less than one still give the weighted mean
    small = b.Log(arms=np.array([0]), rewards=np.array([1]), propensity=np.array([0.5]))
    assert b.snips(np.array([0.2, 0.8]), small) == 1.0
    # an arm shown with probability zero leaves IPS and SNIPS undefined
    zero = b.Log(arms=np.array([0, 1]), rewards=np.array([1, 1]), propensity=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="the log has zero propensities; IPS is undefined"):
        b.ips(np.array([0, 0]), zero)
    with pytest.raises(ValueError, match="the log has zero propensities; SNIPS is undefined"):
        b.snips(np.array([0, 0]), zero)
    # a target must give a probability to every arm the log shows
    three = b.Log(arms=np.array([0, 2]), rewards=np.array([1, 1]), propensity=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="the log shows arm 2, the target has 2 arms"):
        b.ips(np.array([0.5, 0.5]), three)
    with pytest.raises(ValueError, match="target must have shape"):
        b.ips(np.float64(0.5), three)


def test_replay_follows_the_context_and_the_seed():
    rng = np.random.default_rng(1)
    n = 4000
    group = rng.integers(0, 2, n)
    x = np.column_stack([np.ones(n), group])
    rates = np.where(group[:, None] == 1, [0.1, 0.6], [0.6, 0.1])
    r = (rng.random((n, 2)) < rates).astype(float)
    log = b.log_policy(r, np.full(2, 0.5), seed=0)
    lin = b.replay(b.LinUCB(2, 2, alpha=0.5), log, x)
    # only the logged events where LinUCB agreed with the log, in order, with their rewards
    assert np.all(np.diff(lin.events) > 0)
    assert np.array_equal(lin.arms, log.arms[lin.events])
    assert np.array_equal(lin.rewards, log.rewards[lin.events])
    # reading the context, it beats every fixed arm (about 0.35 each) by far
    assert lin.value > 0.5
    with pytest.raises(ValueError, match="contexts must be a matrix with 4000 rows"):
        b.replay(b.LinUCB(2, 2), log, x[:-1])
    # a randomised policy replays the same way for the same seed
    first = b.replay(b.ThompsonSampling(2), log, seed=3)
    again = b.replay(b.ThompsonSampling(2), log, seed=3)
    assert np.array_equal(first.events, again.events)
    assert not np.array_equal(first.events, b.replay(b.ThompsonSampling(2), log, seed=4).events)


def test_replay_runs_replays_every_policy_on_every_log():
    r = bernoulli(6000, seed=3)
    policies = {"Thompson": lambda: b.ThompsonSampling(4),
                "greedy": lambda: b.EpsilonGreedy(4, epsilon=0.1)}
    best = int(r.mean(axis=0).argmax())
    runs = b.replay_runs(r, None, policies, np.full(4, 0.25), fixed_arm=best,
                         fixed_name="always best", seeds=range(3))
    assert set(runs) == {(n, s) for n in ("Thompson", "greedy", "always best")
                         for s in range(3)}
    for s in range(3):  # the log of seed s is log_policy's with seed 100 + s
        log = b.log_policy(r, np.full(4, 0.25), seed=100 + s)
        fixed = runs[("always best", s)]
        np.testing.assert_array_equal(fixed.events, np.flatnonzero(log.arms == best))
        assert fixed.value == pytest.approx(r[log.arms == best, best].mean())
        want = b.replay(b.ThompsonSampling(4), log, seed=s)
        np.testing.assert_array_equal(runs[("Thompson", s)].events, want.events)
    # about a quarter of the visits kept, and the fixed arm's value is the true one
    kept = np.mean([len(runs[("greedy", s)].events) for s in range(3)]) / len(r)
    assert 0.2 < kept < 0.3
    with pytest.raises(ValueError, match="fixed_arm"):
        b.replay_runs(r, None, policies, np.full(4, 0.25), fixed_arm=4, fixed_name="x")
    with pytest.raises(ValueError, match="fixed_name"):
        b.replay_runs(r, None, policies, np.full(4, 0.25), fixed_arm=0,
                      fixed_name="greedy")
