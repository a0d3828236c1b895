"""Every Keras model of the companion trains every weight it holds.

A layer called on a constant instead of a symbolic input (as ``SASRec``'s position
embedding once was) is evaluated once while the model is built: its weight exists, is
added to the output as a fixed random matrix, and is never trained. Nothing else notices.

Each case below fits one model of the companion through its own ``fit`` on a tiny
synthetic data set, sized so that training makes exactly one optimiser step (two for the
character Transformer, whose learning-rate warm-up starts at zero, so that its first step
moves nothing), while every Keras variable created, every ``Model.fit`` and every
optimiser update is recorded. Then:

(a) every weight held by the trained models' layers is in their ``trainable_weights``,
    except normalisation statistics (:data:`FROZEN`); every trainable variable created
    while the model was built and trained belongs to those ``trainable_weights`` (this is
    the check an orphaned layer fails); and the optimiser updated exactly those weights;
(b) every trainable weight differs from its initial value after the step.

Models not covered, and why: ``export.scorer_model`` is built from a fitted two-tower
model for serving and is never trained (its item layer is frozen by design);
``distributed.mirrored_fit`` trains a two-``Dense`` classifier in a separate process under
``tf.distribute`` and only reports its losses.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402

#: variable names that may be held by a layer without being trained: normalisation
#: statistics, which the forward pass updates and the optimiser must not (no model of the
#: companion has a batch normalisation layer today; layer normalisation has none)
FROZEN = ("moving_mean", "moving_variance")


class Recorder:
    """Records Keras variables as they are created, models as they are fitted, and the
    variables each optimiser update touches."""

    def __init__(self, monkeypatch) -> None:
        import keras

        self.created: list = []  # (variable, its value at creation if trainable)
        self.fitted: list = []
        self.optimisers: list = []
        self.updated: dict[int, object] = {}
        init, fit = keras.Variable.__init__, keras.Model.fit
        apply = keras.optimizers.Optimizer.apply
        recorder = self

        def record_init(variable, *args, **kwargs):
            init(variable, *args, **kwargs)
            # optimiser slots are created inside the traced training step, where there is
            # no value to read; a model's weights are created eagerly
            value = None
            if variable.trainable:
                value = np.array(keras.ops.convert_to_numpy(variable.value), copy=True)
            recorder.created.append((variable, value))

        def record_fit(model, *args, **kwargs):
            if not any(m is model for m in recorder.fitted):
                recorder.fitted.append(model)
            return fit(model, *args, **kwargs)

        def record_apply(optimiser, grads, trainable_variables=None):
            if trainable_variables is None:
                raise AssertionError("an optimiser was applied without naming its variables; "
                                     "the recorder cannot tell what it trains.")
            variables = list(trainable_variables)
            if not any(o is optimiser for o in recorder.optimisers):
                recorder.optimisers.append(optimiser)
            recorder.updated.update({id(v): v for v in variables})
            return apply(optimiser, grads, variables)

        monkeypatch.setattr(keras.Variable, "__init__", record_init)
        monkeypatch.setattr(keras.Model, "fit", record_fit)
        monkeypatch.setattr(keras.optimizers.Optimizer, "apply", record_apply)


# ------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def shop():
    frame = data.synthetic_shop(n_customers=40, n_products=30, months=12, seed=5)
    clean = preprocessing.clean_transactions(frame)
    interactions = preprocessing.to_interactions(clean.transactions)
    pairs = len(interactions[["user_id", "item_id"]].drop_duplicates())
    return {"clean": clean, "interactions": interactions, "pairs": pairs,
            "text": preprocessing.product_descriptions(clean.transactions),
            "country": preprocessing.customer_countries(clean.transactions)}


BIG = 1 << 20  # a batch larger than any tiny data set: one epoch is one step


def _churn_data(shop):
    from companion.retention import churn

    return churn.churn_dataset(shop["interactions"], "2011-09-01", horizon_days=60,
                               active_days=200, weeks=8)


def _sessions(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A frame in the shape of the Online Shoppers features after one-hot encoding."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"PageValues": rng.exponential(5, n), "ExitRates": rng.random(n)})
    for prefix, levels in (("VisitorType_", ("New", "Returning")), ("TrafficType_", "12"),
                           ("Region_", "12")):
        pick = rng.integers(0, len(levels), n)
        for j, level in enumerate(levels):
            frame[f"{prefix}{level}"] = (pick == j).astype(float)
    frame["Weekend"] = (rng.random(n) < 0.3).astype(float)
    y = (rng.random(n) < 1 / (1 + np.exp(2 - 0.3 * frame["PageValues"]))).astype(float)
    y[:2] = (0.0, 1.0)
    return frame, y


# ----------------------------------------------------------------------------- cases
# each case fits one model and returns (models it keeps, optimiser steps it made); the
# models that ``Model.fit`` ran on are added by the recorder


def _recommender(make):
    def case(shop):
        model = make(shop).fit(shop["interactions"])
        return [model.model_], 1
    return case


def _deep(name, **kwargs):
    from companion.recsys import deep

    return _recommender(lambda shop: getattr(deep, name)(epochs=1, seed=0, **kwargs))


def _two_tower(shop):
    from companion.recsys import deep

    model = deep.TwoTower(dim=4, item_text=shop["text"], user_context=shop["country"],
                          epochs=1, batch_size=shop["pairs"], seed=0).fit(shop["interactions"])
    return [model.model_], 1


def _history_mlp(shop):
    from companion.ops import compression

    model = compression.HistoryMLP(dim=4, hidden=(8,), epochs=1, batch_size=BIG, seed=0)
    return [model.fit(shop["interactions"]).model_], 1


def _distilled_mf(shop):
    from companion.ops import compression
    from companion.recsys import baselines as rec

    teacher = rec.ItemKNN(neighbours=5).fit(shop["interactions"])
    model = compression.DistilledMF(dim=4, teacher=teacher, epochs=1, batch_size=BIG, seed=0)
    return [model.fit(shop["interactions"]).model_], 1


def _mlp_classifier(shop):
    from companion.foundations.mlp import KerasMLPClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] + rng.normal(size=60) > 0).astype(int)
    model = KerasMLPClassifier(hidden=(8, 4), dropout=0.1, l2=1e-4, epochs=1,
                               batch_size=BIG).fit(x, y)
    return [model.model_], 1


def _sequence_churn(shop):
    from companion.retention import churn

    model = churn.SequenceChurn(units=4, hidden=4, epochs=1, batch_size=BIG, seed=0)
    return [model.fit(_churn_data(shop)).model_], 1


def _feature_mlp(shop):
    from companion.retention import explain

    model = explain.FeatureMLP(hidden=4, epochs=1, batch_size=BIG, seed=0)
    model = model.fit(_churn_data(shop))
    return [model.model_, model.logit_model_], 1


def _tabular(kind):
    def case(shop):
        from companion.apps import ads

        x, y = _sessions(seed=0)
        xv, yv = _sessions(60, seed=1)
        net = ads.TabularNet(kind, epochs=1, batch_size=BIG, deep=(8, 4), seed=0)
        return [net.fit(x, y, validation=(xv, yv)).model_], 1
    return case


def _text_encoder(shop):
    from companion.recsys import content

    model = content.TextEncoder(dim=4, epochs=1, pairs_per_epoch=64, batch_size=64, seed=0)
    model.fit(shop["text"], shop["interactions"])
    return [model.encoder_], 1


def _context_two_tower(shop):
    from companion.recsys import content

    contexts = content.basket_contexts(shop["clean"].transactions)
    model = content.ContextTwoTower(dim=4, context_dim=2, epochs=1, batch_size=256,
                                    lines_per_epoch=256, seed=0)
    model.fit(shop["interactions"], contexts)
    return [model.query_, model.item_], 1


def _skip_gram(shop):
    from companion.foundations.embeddings import SkipGram

    baskets = shop["interactions"].groupby("invoice")["item_id"].agg(list)
    SkipGram(dim=4, window=None, min_count=1, epochs=1, batch_size=BIG).fit(baskets)
    return [], 1


def _transformer_lm(shop):
    from companion.apps import textgen

    texts = textgen.prepare_corpus(shop["text"].tolist())
    vocab = textgen.CharVocabulary.fit(texts)
    model = textgen.TransformerLM(vocab, context=40, dim=8, layers=1, heads=2, epochs=1,
                                  batch_size=-(-len(texts) // 2), seed=0)
    model.fit(texts, texts[:4])
    return [model.model_], 2


def _sequence_forecaster(shop):
    from companion.apps import supply

    rng = np.random.default_rng(0)
    demand = rng.poisson(20, size=(5, 30)).astype(float)
    week_of_year = (np.arange(34) % 52 + 1).astype(float)
    model = supply.SequenceForecaster(horizon=2, window=4, units=4, epochs=1,
                                      batch_size=BIG, validation_weeks=2, seed=0)
    return [model.fit(demand, 29, week_of_year).model_], 1


def _listwise_ranker(shop):
    from companion.recsys import twostage

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 5)
    x = rng.normal(size=(60, 4))
    x[::7, 1] = np.nan  # a feature with missing values gets an indicator column
    y = (x[:, 0] + rng.normal(size=60) > 1).astype(float)
    model = twostage.KerasListwiseRanker(hidden=(8, 4), epochs=1, batch_size=BIG, seed=0)
    return [model.fit(x, y, groups).model_], 1


CASES = {
    "deep.MatrixFactorization": _deep("MatrixFactorization", dim=4, batch_size=BIG),
    "deep.NeuMF": _deep("NeuMF", dim=4, hidden=(8,), negatives=1, batch_size=BIG),
    "deep.TwoTower": _two_tower,
    "deep.SASRec (sampled softmax)": _deep("SASRec", dim=4, heads=2, max_len=5, negatives=3,
                                           batch_size=BIG),
    "deep.SASRec (full softmax)": _deep("SASRec", dim=4, blocks=2, heads=2, max_len=5,
                                        negatives=None, batch_size=BIG),
    "deep.SourceLSTM": _deep("SourceLSTM", dim=4, units=4, batch_size=BIG),
    "compression.HistoryMLP": _history_mlp,
    "compression.DistilledMF": _distilled_mf,
    "models.KerasMLPClassifier": _mlp_classifier,
    "churn.SequenceChurn": _sequence_churn,
    "explain.FeatureMLP": _feature_mlp,
    "ads.TabularNet (DCN-v2)": _tabular("dcn"),
    "ads.TabularNet (Wide & Deep)": _tabular("wide_deep"),
    "content.TextEncoder": _text_encoder,
    "content.ContextTwoTower": _context_two_tower,
    "embeddings.SkipGram": _skip_gram,
    "textgen.TransformerLM": _transformer_lm,
    "supply.SequenceForecaster": _sequence_forecaster,
    "twostage.KerasListwiseRanker": _listwise_ranker,
}


def _ids(variables) -> dict[int, object]:
    return {id(v): v for v in variables}


@pytest.mark.parametrize("name", list(CASES))
def test_every_weight_is_trained(shop, monkeypatch, name):
    recorder = Recorder(monkeypatch)
    kept, steps = CASES[name](shop)
    monkeypatch.undo()
    models = list(recorder.fitted)
    models += [m for m in kept if not any(m is f for f in models)]
    assert models, f"{name}: no Keras model was trained"
    trainable = {}
    for model in models:
        own = _ids(model.trainable_weights)
        trainable.update(own)
        held = [w.path for w in model.weights if id(w) not in own and w.name not in FROZEN]
        assert not held, f"{name}: layers hold weights that are not trainable: {held}"
    assert trainable, f"{name}: nothing to train"
    # (a) no trainable variable was created outside the trained models (an orphaned layer)
    initial = {id(v): (v, value) for v, value in recorder.created}
    orphans = [v.path for v, _ in initial.values() if v.trainable and id(v) not in trainable]
    assert not orphans, f"{name}: weights created but never trained: {orphans}"
    # ... and the optimiser updated exactly the trainable weights
    assert set(recorder.updated) == set(trainable), (
        f"{name}: the optimiser updated {sorted(v.path for v in recorder.updated.values())}, "
        f"the models' trainable weights are {sorted(v.path for v in trainable.values())}")
    made = [int(o.iterations.numpy()) for o in recorder.optimisers]
    assert made == [steps], f"{name}: expected {steps} optimiser step(s), got {made}"
    # (b) each trainable weight moved in that step
    missing = [v.path for i, v in trainable.items() if i not in initial]
    assert not missing, f"{name}: trainable weights of unknown origin: {missing}"
    still = [v.path for i, v in trainable.items()
             if np.array_equal(np.asarray(v.numpy()), initial[i][1])]
    assert not still, f"{name}: weights unchanged by a training step: {still}"
