"""Tests of companion.compression: distillation loss, pruning, quantisation, models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import rel_entr

from companion import compression


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
