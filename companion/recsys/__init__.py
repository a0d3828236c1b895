"""Recommender systems: baselines, deep and content models, two-stage ranking, evaluation.

Every recommender follows the protocol of :class:`companion.recsys.baselines.Recommender`:
``fit(interactions)``, ``score(user_ids)``, ``recommend(user_ids, k)``.

Its modules:

baselines
    The recommender protocol, and the classical recommenders that are the book's
    baselines.
deep
    Keras recommenders that follow the protocol of :mod:`companion.recsys.baselines`.
content
    Content-based, cold-start and context-aware recommendation.
content_studies
    The studies of chapters 6.4 and 8 on content: cold start, context, text and ids.
twostage
    Two-stage recommendation: cheap candidate generators, then a learned ranker.
ranking
    The recommender evaluation protocol: tasks, full-ranking metrics and result tables.
experiments
    Experiment drivers for the Keras recommenders: tune on validation, test over seeds.
incremental
    Week-by-week model updates: a full refit, a warm-start update, or no update at all.
federated
    A NumPy factor model trained by SGD, centrally, by federated averaging, or locally.
"""
