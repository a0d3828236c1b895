"""Tests of companion.ops.compression: distillation loss, pruning, quantisation, models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import rel_entr

from companion.ops import compression


def test_distillation_loss_is_kl_when_alpha_is_one_and_t_is_one():
    student = np.array([[1.0, 0.0, -1.0], [0.2, 0.3, 0.1]])
    teacher = np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.0]])
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    p_t, p_s = compression.softmax(teacher), compression.softmax(student)
    kl = rel_entr(p_t, p_s).sum(axis=1)
    got = compression.distillation_loss(student, teacher, targets, temperature=1.0, alpha=1.0)
    np.testing.assert_allclose(got, kl, rtol=1e-10)


def test_distillation_loss_hand_computed_mixture():
    student, teacher = np.array([[0.0, 0.0]]), np.array([[np.log(3.0), 0.0]])
    targets = np.array([[1.0, 0.0]])
    # hard part: -ln(1/2); soft part at T = 1: KL((3/4, 1/4) || (1/2, 1/2))
    kl = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
    got = compression.distillation_loss(student, teacher, targets, temperature=1.0, alpha=0.5)
    assert got[0] == pytest.approx(0.5 * np.log(2) + 0.5 * kl, rel=1e-12)


def test_keras_distillation_loss_matches_numpy():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    y = rng.dirichlet(np.ones(5), size=4)
    loss = compression._keras_distillation_loss(5, temperature=2.0, alpha=0.3)
    got = np.asarray(loss(np.concatenate([y, t], axis=1).astype("float32"),
                          s.astype("float32")))
    want = compression.distillation_loss(s, t, y, temperature=2.0, alpha=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_distillation_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        compression.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)),
                                      alpha=2.0)
    with pytest.raises(ValueError, match="same shape"):
        compression.distillation_loss(np.zeros((1, 2)), np.zeros((1, 3)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="temperature"):
        compression.softmax(np.zeros(2), temperature=0)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_pruning_reaches_the_asked_sparsity(sparsity, scope):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(40, 8)), rng.normal(size=8), rng.normal(size=(8, 30))]
    pruned = compression.magnitude_prune(weights, sparsity, scope=scope)
    assert compression.sparsity_of(pruned) == pytest.approx(sparsity, abs=1 / 560)
    np.testing.assert_array_equal(pruned[1], weights[1])          # biases kept
    kept = np.concatenate([np.abs(p[p != 0]) for p in (pruned[0], pruned[2])])
    pairs = zip(weights[::2], pruned[::2], strict=True)
    gone = np.concatenate([np.abs(w[p == 0]) for w, p in pairs])
    if scope == "global" and sparsity > 0:
        assert gone.max() <= kept.min()                            # the smallest went
    assert weights[0].shape == pruned[0].shape and (weights[0] != 0).all()  # no mutation


def test_magnitude_pruning_with_ties_prunes_exactly():
    pruned = compression.magnitude_prune([np.ones((4, 5))], 0.5)
    assert compression.sparsity_of(pruned) == 0.5


def test_magnitude_pruning_rejects_bad_input():
    with pytest.raises(ValueError, match="sparsity"):
        compression.magnitude_prune([np.ones((2, 2))], 1.0)
    with pytest.raises(ValueError, match="scope"):
        compression.magnitude_prune([np.ones((2, 2))], 0.5, scope="row")
    with pytest.raises(ValueError, match="dimensions"):
        compression.magnitude_prune([np.ones(3)], 0.5)


def test_source_pruning_prunes_by_position_not_magnitude():
    w = np.array([[10.0, 9.0], [0.1, 0.2]])
    np.testing.assert_array_equal(compression.source_prune(w, 0.5), [[0, 0], [0.1, 0.2]])


@pytest.mark.parametrize("axis", [None, 0, -1])
def test_quantise_dequantise_error_is_at_most_half_a_step(axis):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 7)) * np.linspace(0.1, 3, 7)
    scale, zero_point = compression.affine_parameters(x, axis=axis)
    q = compression.quantize(x, scale, zero_point)
    assert q.dtype == np.int8 and q.min() >= -128 and q.max() <= 127
    error = np.abs(compression.dequantize(q, scale, zero_point) - x)
    assert (error <= scale / 2 + 1e-6).all()


def test_quantise_hand_example_and_clipping():
    # scale 0.1, zero point 0: 0.26 -> 3 -> 0.3; 100 clips to 127 -> 12.7
    q = compression.quantize(np.array([0.26, -0.04, 100.0]), 0.1, 0)
    assert list(q) == [3, 0, 127]
    np.testing.assert_allclose(compression.dequantize(q, 0.1, 0), [0.3, 0.0, 12.7], rtol=1e-6)
    scale, zero_point = compression.affine_parameters(np.array([0.0, 2.55]))
    assert scale == pytest.approx(0.01) and zero_point == -128


def test_source_quantisation_multiplies_and_truncates():
    x = np.array([0.26, 0.5])
    q = compression.source_quantize(x, 0.1, 0)
    assert list(q) == [0, 0]                       # 0.026 and 0.05 truncate to zero
    assert list(compression.quantize(x, 0.1, 0)) == [3, 5]


def test_quantize_weights_size_and_biases():
    w = [np.ones((100, 4), np.float32), np.ones(4, np.float32)]
    dq, size = compression.quantize_weights(w)
    assert size == 400 + 2 * 4 * 4 + 16
    np.testing.assert_allclose(dq[0], 1.0, atol=1 / 255)
    assert compression.storage_bytes(w) == 1616
    sparse = [np.eye(10, dtype=np.float32)]
    assert compression.storage_bytes(sparse, sparse=True) == 10 * 8 + 11 * 4


def test_tower_parameters_match_keras(interactions):
    assert compression.tower_parameters(32, (256,)) == compression.tower_parameters(
        32, (64, 64, 64, 64)) == 16672
    model = compression.HistoryMLP(dim=4, hidden=(6, 5), epochs=1).fit(interactions)
    n_items = model.n_items_
    assert model.n_parameters() == compression.tower_parameters(4, (6, 5)) + 2 * 4 * n_items \
        + n_items


def test_history_mlp_and_distilled_mf_fit_and_rank(interactions):
    teacher = compression.DistilledMF(dim=8, alpha=0.0, epochs=2, seed=0).fit(interactions)
    student = compression.DistilledMF(dim=2, teacher=teacher, epochs=2, seed=0).fit(interactions)
    users = interactions["user_id"].unique()[:5]
    assert student.recommend(users, k=3).shape == (5, 3)
    assert np.isfinite(student.score(users)).all()
    mlp = compression.HistoryMLP(dim=4, hidden=(8,), l1=1e-4, epochs=2).fit(interactions)
    assert mlp.recommend(users, k=3).shape == (5, 3)
    with pytest.raises(ValueError, match="alpha"):
        compression.DistilledMF(alpha=1.5).fit(interactions)


def test_with_weights_restores(interactions):
    model = compression.DistilledMF(dim=4, alpha=0.0, epochs=1).fit(interactions)
    before = model.score(interactions["user_id"].unique()[:3])
    zeros = [np.zeros_like(w) for w in model.model_.get_weights()]
    with compression.WithWeights(model, zeros) as m:
        assert (m.score(interactions["user_id"].unique()[:3]) == 0).all()
    np.testing.assert_array_equal(model.score(interactions["user_id"].unique()[:3]), before)


# ----------------------------------------------------------------------------- structured


def test_unit_importance_is_the_norm_of_each_rank_one_contribution():
    rng = np.random.default_rng(3)
    w_in, w_out = rng.normal(size=(7, 4)), rng.normal(size=(4, 9))
    want = [np.linalg.norm(np.outer(w_in[:, k], w_out[k])) for k in range(4)]
    np.testing.assert_allclose(compression.unit_importance(w_in, w_out), want, rtol=1e-12)
    with pytest.raises(ValueError, match="same units"):
        compression.unit_importance(w_in, w_out.T)
    with pytest.raises(ValueError, match="matrices"):
        compression.unit_importance(w_in[:, 0], w_out)


def test_prune_units_drops_the_weakest_units_and_shrinks_the_arrays():
    rng = np.random.default_rng(4)
    w_in, w_out = rng.normal(size=(6, 5)), rng.normal(size=(5, 8))
    w_in[:, 1] *= 1e-3                     # unit 1 contributes almost nothing
    w_out[3] = 0.0                         # unit 3 contributes nothing at all
    b_in = np.arange(5.0)
    cut = compression.prune_units(w_in, w_out, 3, b_in=b_in)
    np.testing.assert_array_equal(cut["kept"], [0, 2, 4])
    assert cut["w_in"].shape == (6, 3) and cut["w_out"].shape == (3, 8)
    np.testing.assert_array_equal(cut["b_in"], [0.0, 2.0, 4.0])
    # dropping a unit that contributes nothing leaves the product unchanged
    four = compression.prune_units(w_in, w_out, 4)
    np.testing.assert_allclose(four["w_in"] @ four["w_out"], w_in @ w_out, atol=1e-12)
    assert w_in.shape == (6, 5)            # inputs are not modified


def test_prune_units_random_control_and_bad_input():
    rng = np.random.default_rng(5)
    w_in, w_out = rng.normal(size=(6, 10)), rng.normal(size=(10, 3))
    a = compression.prune_units(w_in, w_out, 4, method="random", seed=1)
    b = compression.prune_units(w_in, w_out, 4, method="random", seed=1)
    assert len(set(a["kept"])) == 4 and (np.diff(a["kept"]) > 0).all()
    np.testing.assert_array_equal(a["kept"], b["kept"])
    for keep in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="keep"):
            compression.prune_units(w_in, w_out, keep)
    with pytest.raises(ValueError, match="method"):
        compression.prune_units(w_in, w_out, 2, method="magnitude")
    with pytest.raises(ValueError, match="b_in"):
        compression.prune_units(w_in, w_out, 2, b_in=np.zeros(3))


def test_low_rank_is_the_best_approximation_and_ignores_rotations():
    rng = np.random.default_rng(6)
    w_in, w_out = rng.normal(size=(30, 6)), rng.normal(size=(6, 20))
    product = w_in @ w_out
    u, s, vt = np.linalg.svd(product)
    for keep in (1, 3, 6):
        cut = compression.low_rank(w_in, w_out, keep)
        assert cut["w_in"].shape == (30, keep) and cut["w_out"].shape == (keep, 20)
        best = (u[:, :keep] * s[:keep]) @ vt[:keep]
        np.testing.assert_allclose(cut["w_in"] @ cut["w_out"], best, atol=1e-9)
        # Eckart-Young: the error is the norm of the dropped singular values
        error = np.linalg.norm(product - cut["w_in"] @ cut["w_out"])
        assert error == pytest.approx(np.sqrt((s[keep:6] ** 2).sum()), abs=1e-9)
    np.testing.assert_allclose(cut["singular_values"], s[:6], rtol=1e-10)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    turned = compression.low_rank(w_in @ rotation, rotation.T @ w_out, 2)
    np.testing.assert_allclose(turned["w_in"] @ turned["w_out"],
                               compression.low_rank(w_in, w_out, 2)["w_in"]
                               @ compression.low_rank(w_in, w_out, 2)["w_out"], atol=1e-9)
    with pytest.raises(ValueError, match="keep"):
        compression.low_rank(w_in, w_out, 7)


def test_factor_scorer_reproduces_and_prunes_a_fitted_factorisation(interactions):
    model = compression.DistilledMF(dim=6, alpha=0.0, epochs=2, seed=0).fit(interactions)
    users = interactions["user_id"].unique()[:7]
    p, q, bias = model.model_.get_weights()
    full = compression.FactorScorer(model, p, q, bias)
    np.testing.assert_allclose(full.score(users), model.score(users), rtol=1e-5, atol=1e-6)
    assert full.n_parameters() == model.n_parameters()
    cut = compression.prune_units(p, q, 2)
    zeroed = [p.copy(), q.copy(), bias]
    dropped = np.setdiff1d(np.arange(6), cut["kept"])
    zeroed[0][:, dropped] = 0.0
    small = compression.FactorScorer(model, cut["w_in"], cut["w_out"], bias)
    with compression.WithWeights(model, zeroed) as same:
        np.testing.assert_allclose(small.score(users), same.score(users), rtol=1e-5,
                                   atol=1e-6)
    assert small.recommend(users, k=3).shape == (7, 3)
    with pytest.raises(ValueError, match="user_vectors"):
        compression.FactorScorer(model, p[:-1], q, bias)
    with pytest.raises(ValueError, match="item_vectors"):
        compression.FactorScorer(model, p, q[:-1], bias)
    with pytest.raises(ValueError, match="item_bias"):
        compression.FactorScorer(model, p, q, bias[:-1])


def test_structured_pruning_curve_compares_four_ways_at_equal_budgets(interactions):
    from companion.data import preprocessing
    from companion.recsys import ranking

    split = preprocessing.split_by_time(interactions, "2011-10-01")
    task = ranking.RankingTask.from_split(split.train, split.test)
    model = compression.DistilledMF(dim=8, alpha=0.0, epochs=2, seed=0).fit(split.train)
    rows, per_user = compression.structured_pruning_curve(model, task, (8, 2), seed=0)
    assert [r["method"] for r in rows[:4]] == ["dimensions by norm", "random dimensions",
                                                "rank by SVD", "magnitude"]
    assert len(rows) == 8 and len(per_user) == 8
    full = {r["method"]: r for r in rows if r["dimensions"] == 8}
    assert {r["sparsity"] for r in full.values()} == {0.0}
    # keeping every dimension changes no score, whichever way
    teacher = compression._ndcg(model, task)["all"].mean()
    for r in full.values():
        assert r["all"] == pytest.approx(teacher, abs=1e-6)
    two = {r["method"]: r for r in rows if r["dimensions"] == 2}
    assert two["magnitude"]["sparsity"] == 0.75
    # dense smaller tables take less than half the bytes of sparse ones at the same budget
    assert two["dimensions by norm"]["bytes"] < two["magnitude"]["bytes"] / 1.5
    assert set(per_user["rank by SVD, 2 of 8"]) == {"all", "new"}


# ----------------------------------------------------------------------------- the source


SOURCE_DISTILLATION = """
def {name}(model, student_model, teacher_model, train_data, learning_rate, num_epochs):
    for epoch in range(num_epochs):
        student_predictions = student_model.predict(train_data)
        teacher_predictions = teacher_model.predict(train_data)
        loss = compute_loss(student_predictions, teacher_predictions)
        update_model_parameters(student_model, gradients, learning_rate)
"""


def test_run_source_returns_the_error_the_code_raises():
    code = "def f(x):\n    return x.remove()\n"
    result, error = compression.run_source(code, "f", [1])
    assert isinstance(error, TypeError) and result is None   # list.remove needs an argument
    result, error = compression.run_source(code, "f", 1.5, namespace={})
    assert isinstance(error, AttributeError)
    assert compression.run_source("def f():\n    return k\n", "f", namespace={"k": 3}) \
        == (3, None)
    with pytest.raises(ValueError, match="no function named 'g'"):
        compression.run_source(code, "g")


def test_source_distillation_runs_only_with_gradients_and_never_learns(interactions):
    teacher = compression.DistilledMF(dim=6, alpha=0.0, epochs=1, seed=0).fit(interactions)
    student = compression.DistilledMF(dim=2, alpha=0.0, epochs=1, seed=1).fit(interactions)
    users = np.arange(20, dtype=np.int32)
    code = SOURCE_DISTILLATION.format(name="soft")
    as_printed = compression.source_distillation(code, "soft", student.model_, teacher.model_,
                                                 users)
    assert isinstance(as_printed["error"], NameError) and "gradients" in str(
        as_printed["error"])
    run = compression.source_distillation(code, "soft", student.model_, teacher.model_, users,
                                          define_gradients=True, num_epochs=2)
    assert run["error"] is None and len(run["losses"]) == 2
    assert run["updates"][0] == {"gradients": None, "learning_rate": 0.01}
    s = student.model_.predict(users, verbose=0)
    t = teacher.model_.predict(users, verbose=0)
    want = compression.distillation_loss(s, t, np.zeros_like(s), alpha=1.0).mean()
    assert run["losses"][0] == pytest.approx(want, rel=1e-9)
    assert run["losses"][1] == run["losses"][0]           # nothing was updated
    none = compression.distillation_gradients(student.model_, t, users, through_predict=True)
    assert none == [None] * len(student.model_.trainable_weights)
    flows = compression.distillation_gradients(student.model_, t, users, through_predict=False)
    assert all(g is not None and np.isfinite(g) and g > 0 for g in flows)


def test_build_source_model_runs_the_printed_code():
    code = ("def tower(model, num_layers, hidden_size):\n"
            "    for layer in range(num_layers):\n"
            "        model.add(Dense(hidden_size, activation='relu'))\n"
            "    model.add(Dense(num_classes, activation='softmax'))\n"
            "    return model\n")
    model = compression.build_source_model(code, "tower", 2, 8, inputs=4, num_classes=3)
    assert compression.describe_layers(model) == "8 relu > 8 relu > 3 softmax"
    assert model.count_params() == (4 * 8 + 8) + (8 * 8 + 8) + (8 * 3 + 3)
    with pytest.raises(ValueError, match="failed"):
        compression.build_source_model(code.replace("num_classes", "classes"), "tower", 1, 2)


# ----------------------------------------------------------------------------- depth and width


def test_tower_point_measures_one_tower_on_the_validation_task(interactions):
    from companion.recsys import experiments, ranking

    split = experiments.last_days_split(interactions, window_days=30)
    task = ranking.RankingTask.from_time_split(split, "validation")
    point = compression.tower_point(split, task, (6, 5), l1=1e-4, dim=4, epochs=2, seed=0)
    assert point["tower"] == "6 x 5" and (point["l1"], point["l2"]) == (1e-4, 0.0)
    assert point["tower parameters"] == compression.tower_parameters(4, (6, 5))
    assert point["parameters"] > point["tower parameters"]
    assert 1 <= point["epochs"] <= 2 and np.isfinite(point["training loss"])
    assert set(point["per_user"]) == {"all", "new"}
    assert len(point["per_user"]["all"]) == len(task.truth["all"])
    assert point["validation NDCG@10"] == pytest.approx(
        np.mean([v.mean() for v in point["per_user"].values()]))
    assert 0.0 <= point["weights below 1e-3"] < 1.0
    again = compression.tower_point(split, task, (6, 5), l1=1e-4, dim=4, epochs=2, seed=0)
    assert again["validation NDCG@10"] == pytest.approx(point["validation NDCG@10"])
    with pytest.raises(ValueError, match="hidden"):
        compression.tower_point(split, task, (), dim=4, epochs=1)
    with pytest.raises(TypeError, match="RankingTask"):
        compression.tower_point(split, split.validation, (4,), dim=4, epochs=1)
