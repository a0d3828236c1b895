"""companion.foundations.nn (initialisation) and companion.foundations.embeddings (skip-gram)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from companion.foundations import nn  # noqa: E402
from companion.foundations.embeddings import SkipGram, neighbour_coherence  # noqa: E402


@pytest.mark.parametrize("scheme", list(nn.SCHEMES))
def test_initialisers_have_their_designed_variance(scheme):
    w = nn.initialise(scheme, 400, 300, rng=0)
    assert w.shape == (400, 300)
    assert w.var() == pytest.approx(nn.expected_variance(scheme, 400, 300), rel=0.03)


@pytest.mark.parametrize(
    ("scheme", "keras_init"),
    [
        ("glorot_uniform", keras.initializers.GlorotUniform(seed=0)),
        ("glorot_normal", keras.initializers.GlorotNormal(seed=0)),
        ("he_uniform", keras.initializers.HeUniform(seed=0)),
        ("he_normal", keras.initializers.HeNormal(seed=0)),
    ],
)
def test_initialisers_match_keras_in_distribution(scheme, keras_init):
    ours = nn.initialise(scheme, 300, 200, rng=1)
    theirs = np.asarray(keras_init((300, 200)))
    assert ours.var() == pytest.approx(theirs.var(), rel=0.03)
    assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.05)


def test_signal_propagation_separates_good_and_bad_schemes():
    good = nn.signal_propagation("glorot_normal", "tanh", depth=20, width=128)
    small = nn.signal_propagation("uniform(±0.1)", "tanh", depth=20, width=128)
    large = nn.signal_propagation("normal(1)", "tanh", depth=20, width=128)
    relu_he = nn.signal_propagation("he_normal", "relu", depth=20, width=128)
    relu_glorot = nn.signal_propagation("glorot_normal", "relu", depth=20, width=128)
    assert good["activation std"].iloc[-1] > 0.1
    assert small["activation std"].iloc[-1] < 1e-3      # vanishes
    assert large["gradient std"].iloc[0] > 1e3 * large["gradient std"].iloc[-1]  # explodes
    assert 0.5 < relu_he["activation std"].iloc[-1] / relu_he["activation std"].iloc[0] < 2
    assert relu_glorot["activation std"].iloc[-1] < 0.05 * relu_glorot["activation std"].iloc[0]
    assert list(good.columns) == ["activation std", "gradient std"]


def test_nn_rejects_bad_input():
    with pytest.raises(ValueError, match="scheme"):
        nn.initialise("lecun", 2, 2)
    with pytest.raises(ValueError, match="fan_in"):
        nn.initialise("he_normal", 0, 2)
    with pytest.raises(ValueError, match="activation"):
        nn.signal_propagation("he_normal", "gelu")
    with pytest.raises(ValueError, match="finite 2-D"):
        nn.signal_propagation("he_normal", x=np.ones(4))


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    weights = {"w": 0}
    stopper = nn.EarlyStopping(patience=2)
    scores = [0.1, 0.3, 0.2, 0.25, 0.9]
    for epoch, score in enumerate(scores, start=1):
        weights["w"] = epoch
        stopper.update(epoch, score, lambda: dict(weights))
        if stopper.stop:
            break
    assert epoch == 4  # two epochs without beating 0.3: the 0.9 is never seen
    assert stopper.finish(lambda w: weights.update(w), epoch) == 2
    assert weights["w"] == 2  # the weights of epoch 2 are back

    unscored = nn.EarlyStopping(patience=1)
    assert not unscored.stop
    assert unscored.finish(lambda w: pytest.fail("nothing to restore"), 7) == 7
    with pytest.raises(ValueError, match="patience"):
        nn.EarlyStopping(patience=0)


def test_source_early_stop_is_one_epoch_later_than_patience_allows():
    # losses improve for 3 epochs, then never again: the best epoch is 3
    losses = [1.0, 0.8, 0.7, 0.75, 0.9, 0.71, 0.8, 0.85, 0.9]
    # the counter reaches patience + 1 at epoch 3 + patience + 1
    assert nn.source_early_stop(losses, 2) == 6
    assert nn.source_early_stop(losses, 0) == 4
    # Keras' EarlyStopping with the same patience stops one epoch earlier
    probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    probe.stop_training = False
    keras_stop = keras.callbacks.EarlyStopping(patience=2)
    keras_stop.set_model(probe)
    keras_stop.on_train_begin()
    for epoch, loss in enumerate(losses):
        keras_stop.on_epoch_end(epoch, {"val_loss": loss})
        if probe.stop_training:
            break
    assert nn.source_early_stop(losses, 2) == epoch + 2
    # equal is not better; a loop that never runs out of patience runs every epoch
    assert nn.source_early_stop([1.0, 1.0, 1.0], 1) == 3
    assert nn.source_early_stop([3.0, 2.0, 1.0], 1) == 3
    with pytest.raises(ValueError, match="empty"):
        nn.source_early_stop([], 2)
    with pytest.raises(ValueError, match="finite"):
        nn.source_early_stop([1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="patience"):
        nn.source_early_stop([1.0], -1)


def test_skipgram_learns_planted_groups():
    rng = np.random.default_rng(0)
    groups = [[f"a{i}" for i in range(6)], [f"b{i}" for i in range(6)]]
    baskets = [list(rng.choice(groups[g], size=4, replace=False))
               for g in rng.integers(0, 2, 600)]
    model = SkipGram(dim=8, window=None, epochs=15, batch_size=512, learning_rate=0.02,
                     min_count=1, seed=0).fit(baskets)
    assert len(model.vocabulary_) == 12
    np.testing.assert_allclose(np.linalg.norm(model.vectors_, axis=1), 1.0, rtol=1e-5)
    near = model.most_similar("a0", k=3)["token"]
    assert all(t.startswith("a") for t in near)
    assert model.history_[-1] < model.history_[0]
    again = SkipGram(dim=8, window=None, epochs=15, batch_size=512, learning_rate=0.02,
                     min_count=1, seed=0).fit(baskets)
    np.testing.assert_array_equal(model.vectors_, again.vectors_)  # reproducible
    labels = {t: {t[0]} for t in model.vocabulary_}
    near, rand = neighbour_coherence(model, labels, ["a0", "b0", "a1"], k=3)
    assert near == 1.0 and rand < 0.9
    with pytest.raises(ValueError, match="none of the tokens"):
        neighbour_coherence(model, labels, ["zz"])


def test_skipgram_window_and_errors():
    sentences = [["red", "heart", "mug"], ["blue", "heart", "mug"]] * 20
    model = SkipGram(dim=4, window=1, epochs=2, min_count=1, batch_size=64).fit(sentences)
    assert set(model.vocabulary_) == {"red", "heart", "mug", "blue"}
    with pytest.raises(KeyError, match="not in the vocabulary"):
        model.vector("lamp")
    with pytest.raises(RuntimeError, match="not fitted"):
        SkipGram().most_similar("x")
    with pytest.raises(ValueError, match="empty"):
        SkipGram().fit([])
    with pytest.raises(ValueError, match="min_count"):
        SkipGram(min_count=5).fit([["a", "b"]])
    with pytest.raises(ValueError, match="dim"):
        SkipGram(dim=0)
