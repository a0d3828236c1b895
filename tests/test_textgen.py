"""Tests of the character language models, their scoring and sampling (companion.apps.textgen)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from companion.apps import textgen

TEXTS = ["RED HEART T-LIGHT HOLDER", "SET OF 3 RED BOXES", "BLUE HEART CANDLE",
         "SET OF 6 BLUE CUPS", "CHRISTMAS TREE DECORATION", "RED RETROSPOT MUG",
         "PINK HEART BOX", "SET OF 4 CHRISTMAS CARDS"]


@pytest.fixture(scope="module")
def vocab() -> textgen.CharVocabulary:
    return textgen.CharVocabulary.fit(TEXTS)


@pytest.fixture(scope="module")
def small_lm(vocab) -> textgen.TransformerLM:
    return textgen.TransformerLM(vocab, context=40, dim=16, layers=2, heads=2,
                                 dropout=0.0, seed=3)


def test_prepare_corpus_normalises_and_deduplicates():
    out = textgen.prepare_corpus(["red  heart ", "RED HEART", None, "", " ", np.nan,
                                  "blue\tmug"])
    assert out == ["BLUE MUG", "RED HEART"]


@pytest.mark.parametrize("bad", [[], [None, "  "], pd.Series([], dtype="string")])
def test_prepare_corpus_rejects_empty(bad):
    with pytest.raises(ValueError, match="empty"):
        textgen.prepare_corpus(bad)


def test_prepare_corpus_rejects_a_string_and_non_strings():
    with pytest.raises(TypeError, match="collection"):
        textgen.prepare_corpus("RED HEART")
    with pytest.raises(TypeError, match="int"):
        textgen.prepare_corpus(["RED", 3])


def test_split_is_by_text_disjoint_and_complete():
    texts = [f"ITEM {i}" for i in range(100)]
    parts = textgen.split_corpus(texts, validation=0.2, test=0.1, seed=1)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [70, 20, 10]
    assert sorted(sum(parts.values(), [])) == sorted(texts)
    assert parts == textgen.split_corpus(texts, validation=0.2, test=0.1, seed=1)
    with pytest.raises(ValueError, match="duplicates"):
        textgen.split_corpus(["A", "A", "B"])
    with pytest.raises(ValueError, match="too few"):
        textgen.split_corpus(["A", "B"])
    with pytest.raises(ValueError, match="validation share"):
        textgen.split_corpus(texts, validation=0.0)


def test_vocabulary_round_trip_and_unknown_characters(vocab):
    ids = vocab.encode("RED BOX")
    assert vocab.decode([vocab.bos, *ids, 0, 5]) == "RED BOX"
    assert vocab.size == len(set("".join(TEXTS))) + 1
    with pytest.raises(ValueError, match=r"\['Z', 'q'\]"):
        vocab.encode("RED qZ")
    with pytest.raises(ValueError, match="empty"):
        textgen.CharVocabulary.fit([])
    with pytest.raises(ValueError, match="single characters"):
        textgen.CharVocabulary(["AB"])


def test_uniform_model_perplexity_is_vocabulary_size(vocab):
    scored = textgen.score(textgen.UniformModel(vocab), TEXTS[:3])
    assert textgen.perplexity(scored["nll"], scored["symbols"]) == pytest.approx(vocab.size)
    assert textgen.bits_per_char(scored["nll"], scored["symbols"]) == pytest.approx(
        math.log2(vocab.size))


@pytest.mark.parametrize("order,discount", [(1, None), (3, None), (5, 0.7), (8, None)])
def test_ngram_distributions_sum_to_one(vocab, order, discount):
    model = textgen.NGramModel(order, discount, vocab=vocab).fit(TEXTS)
    prefixes = ["", "R", "RED ", "SET OF ", "XMAS", "ZZZZZZZZ".replace("Z", "E"), "HEART"]
    prefixes = [p for p in prefixes if not vocab.unknown(p)]
    lp = model.next_log_probs(prefixes)
    assert lp.shape == (len(prefixes), vocab.size)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.isfinite(lp))  # every symbol keeps a positive probability


def test_ngram_learns_and_beats_uniform(vocab):
    model = textgen.NGramModel(4).fit(TEXTS)
    after = model.next_log_probs(["SET OF"])[0]
    assert vocab.symbols()[int(np.argmax(after))] == " "
    uniform = textgen.score(textgen.UniformModel(vocab), TEXTS)["nll"].sum()
    assert textgen.score(model, TEXTS)["nll"].sum() < 0.5 * uniform


def test_score_is_the_sum_of_next_symbol_log_probs(vocab):
    model = textgen.NGramModel(3).fit(TEXTS)
    text = "RED BOX"
    lp = model.next_log_probs([text[:j] for j in range(len(text) + 1)])
    ids = [*vocab.encode(text), 0]
    expected = -sum(lp[j, i] for j, i in enumerate(ids))
    scored = textgen.score(model, [text])
    assert scored.loc[0, "nll"] == pytest.approx(expected)
    assert scored.loc[0, "symbols"] == len(text) + 1


def test_errors_on_bad_input(vocab):
    with pytest.raises(ValueError, match="empty"):
        textgen.NGramModel(3).fit([])
    with pytest.raises(ValueError, match="discount"):
        textgen.NGramModel(3, discount=1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        textgen.NGramModel(3).next_log_probs(["A"])
    model = textgen.NGramModel(3).fit(TEXTS)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        textgen.score(model, ["RED ZEBRA"])
    with pytest.raises(ValueError, match="empty"):
        textgen.score(model, [])
    for bad in (0, -1.0, float("nan"), float("inf"), "hot", True):
        with pytest.raises(ValueError, match="temperature"):
            textgen.sample(model, ["RED "], temperature=bad)
    with pytest.raises(ValueError, match="top_k"):
        textgen.sample(model, ["RED "], top_k=vocab.size + 1)
    with pytest.raises(TypeError, match="list"):
        textgen.sample(model, "RED ")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        textgen.sample(model, ["ZEBRA"])
    with pytest.raises(ValueError, match="multiple of heads"):
        textgen.TransformerLM(vocab, dim=10, heads=4)
    with pytest.raises(TypeError, match="CharVocabulary"):
        textgen.TransformerLM("ABC")


def test_seeded_sampling_is_reproducible(vocab, small_lm):
    for model in (textgen.NGramModel(4).fit(TEXTS), small_lm):
        kwargs = dict(n=5, temperature=0.9, top_k=10, max_length=30)
        a = textgen.sample(model, ["RED ", "SET OF "], seed=7, **kwargs)
        b = textgen.sample(model, ["RED ", "SET OF "], seed=7, **kwargs)
        c = textgen.sample(model, ["RED ", "SET OF "], seed=8, **kwargs)
        pd.testing.assert_frame_equal(a, b)
        assert not a["text"].equals(c["text"])
        assert len(a) == 10 and (a["text"].str.len() <= 30).all()
        assert all(t.startswith(p) for p, t in zip(a["prompt"], a["text"], strict=True))


def test_sample_grid_runs_every_model_with_every_setting():
    models = {"4-gram": textgen.NGramModel(4).fit(TEXTS),
              "uniform": textgen.NGramModel(1).fit(TEXTS)}
    settings = {"cold": {"temperature": 0.5}, "top-3": {"temperature": 1.0, "top_k": 3}}
    grid = textgen.sample_grid(models, ["RED "], settings, n=4, max_length=25, seed=3)
    assert list(grid) == [(m, s) for m in models for s in settings]
    one = textgen.sample(models["4-gram"], ["RED "], n=4, max_length=25, seed=3,
                         temperature=1.0, top_k=3)
    pd.testing.assert_frame_equal(grid["4-gram", "top-3"], one)
    with pytest.raises(ValueError, match="at least one"):
        textgen.sample_grid(models, ["RED "], {}, n=1)


def test_top_1_sampling_is_greedy(vocab):
    model = textgen.NGramModel(5).fit(TEXTS)
    out = textgen.sample(model, ["SET O"], n=3, top_k=1, seed=0)
    assert out["text"].nunique() == 1 and out.loc[0, "text"].startswith("SET OF ")


def test_causal_mask_hides_the_future(vocab, small_lm):
    x = np.array([[vocab.bos, *vocab.encode("RED HEART BOX")]], dtype=np.int32)
    base = np.asarray(small_lm.model_(x, training=False))
    for j in (3, 8, x.shape[1] - 1):
        changed = x.copy()
        changed[0, j] = 1 if x[0, j] != 1 else 2  # another character
        out = np.asarray(small_lm.model_(changed, training=False))
        np.testing.assert_allclose(out[0, :j], base[0, :j], rtol=1e-5, atol=1e-6)
        assert not np.allclose(out[0, j:], base[0, j:])  # the change is seen from j on


def test_transformer_scores_agree_and_distributions_sum_to_one(vocab, small_lm):
    texts = TEXTS[:3]
    whole = textgen.score(small_lm, texts)["nll"].to_numpy()
    lp = small_lm.next_log_probs([t[:j] for t in texts for j in range(len(t) + 1)])
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-6)
    k, stepwise = 0, []
    for t in texts:
        ids = [*vocab.encode(t), 0]
        stepwise.append(-sum(lp[k + j, i] for j, i in enumerate(ids)))
        k += len(ids)
    np.testing.assert_allclose(whole, stepwise, rtol=1e-5)
    assert small_lm.n_parameters() > 0


def test_transformer_learns_and_keeps_best_epoch(vocab):
    lm = textgen.TransformerLM(vocab, context=40, dim=16, layers=1, heads=2, dropout=0.0,
                               epochs=15, batch_size=2, learning_rate=1e-2, seed=1)
    before = textgen.score(lm, TEXTS)["nll"].sum()
    lm.fit(TEXTS, TEXTS)
    after = textgen.score(lm, TEXTS)["nll"].sum()
    assert after < 0.6 * before
    h = lm.history_
    assert min(h.validation) == pytest.approx(h.validation[h.best_epoch - 1])
    weights = lm.get_weights()
    clone = textgen.TransformerLM(vocab, context=40, dim=16, layers=1, heads=2,
                                  dropout=0.0, seed=9).set_weights(weights)
    np.testing.assert_allclose(textgen.score(clone, TEXTS)["nll"],
                               textgen.score(lm, TEXTS)["nll"], rtol=1e-6)
    with pytest.raises(ValueError, match="longer than context"):
        textgen.TransformerLM(vocab, context=8, dim=16, heads=2).fit(TEXTS, TEXTS)


def test_novelty_shares():
    out = textgen.novelty(["RED HEART BOX", "PINK HEART BOX", "RED CUPS", "XQ HEART"],
                          train=["PINK HEART BOX", "SET OF 6 RED CUPS", "RED BOX"],
                          heldout=["RED CUPS"])
    assert out["copies of training"] == 0.25
    assert out["held-out products"] == 0.25
    assert out["novel"] == 0.75
    assert out["novel, known words"] == 0.5  # "XQ" is not a training word
    with pytest.raises(ValueError, match="empty"):
        textgen.novelty([], ["A"])


def test_interpolation_is_a_distribution_and_its_weight_is_tuned(vocab):
    ngram = textgen.NGramModel(4).fit(TEXTS)
    uniform = textgen.UniformModel(vocab)
    mixed = textgen.Interpolated(ngram, uniform, 0.7)
    lp = mixed.next_log_probs(["", "RED ", "SET OF"])
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-12)
    whole = textgen.score(mixed, TEXTS[:2])["nll"]
    np.testing.assert_allclose(
        whole, [-x.sum() for x in textgen.symbol_log_probs(mixed, TEXTS[:2])])
    # the n-gram model fits its own training text far better than the uniform guess
    weight, grid = textgen.tune_interpolation(textgen.symbol_log_probs(ngram, TEXTS),
                                              textgen.symbol_log_probs(uniform, TEXTS))
    assert weight > 0.5 and grid.loc[0.0] == pytest.approx(math.log2(vocab.size))
    assert textgen.Interpolated(ngram, uniform, 1.0).next_log_probs(["RED"]) == \
        pytest.approx(ngram.next_log_probs(["RED"]))
    with pytest.raises(ValueError, match="weight"):
        textgen.Interpolated(ngram, uniform, 1.5)
    with pytest.raises(ValueError, match="same texts"):
        textgen.tune_interpolation([np.zeros(3)], [np.zeros(4)])
