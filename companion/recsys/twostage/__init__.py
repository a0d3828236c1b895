"""Two-stage recommendation: cheap candidate generators, then a learned ranker.

Stage one (:class:`CandidateGenerator`) takes the union of several fitted recommenders'
top ``n`` items per customer: the customer's own past items, next-basket models, a
co-purchase model and what is selling now. Stage two scores each (customer, candidate)
pair from features computed strictly before a cutoff (:func:`ranker_features`) with a
learned ranker: gradient-boosted trees with the LambdaRank objective
(:class:`LightGBMRanker`, Burges 2010; Ke et al. 2017) or a Keras MLP trained with a
listwise softmax loss (:class:`KerasListwiseRanker`).

:class:`TwoStageRecommender` follows the recommender protocol of
:mod:`companion.recsys.baselines`. ``fit(interactions)`` learns the ranker from the last
``horizon_days`` of ``interactions``: generators and features use only the data before that
label window, the labels are what each customer bought in it. It then refits the
generators on all of ``interactions`` for recommending. One ranker is trained per task:
``recommend(..., exclude_seen=False)`` ranks every item (re-purchases included, the
"all" task of :mod:`companion.recsys.ranking`), ``exclude_seen=True`` ranks only items the
customer never bought ("new"), with candidates and labels restricted to such items.

Its modules:

candidates
    Stage one: candidates from several fitted recommenders, and their recall.
features
    The features of each (customer, candidate) pair, computed before a cutoff.
rankers
    The learned rankers: LightGBM LambdaRank and a Keras listwise MLP.
pipeline
    The two-stage recommender behind the recommender protocol.
study
    Chapter 5.6's rolling-origin study of it.
"""

from companion.recsys.twostage.candidates import (
    TASKS,
    CandidateGenerator,
    candidate_recall,
    check_n,
    default_generators,
    restrict_candidates,
)
from companion.recsys.twostage.features import (
    FEATURE_GROUPS,
    HALF_LIVES,
    FeatureBuilder,
    feature_groups,
    ranker_features,
)
from companion.recsys.twostage.pipeline import (
    Examples,
    TwoStageRecommender,
    ndcg_at_k,
    training_examples,
)
from companion.recsys.twostage.rankers import (
    KerasListwiseRanker,
    LightGBMRanker,
    candidate_ndcg,
)
from companion.recsys.twostage.study import N_GRID, TwoStageResult, rolling_two_stage

__all__ = [
    "TASKS", "FEATURE_GROUPS", "HALF_LIVES", "N_GRID",
    "default_generators", "check_n", "CandidateGenerator", "restrict_candidates",
    "candidate_recall", "feature_groups", "FeatureBuilder", "ranker_features",
    "candidate_ndcg", "LightGBMRanker", "KerasListwiseRanker", "ndcg_at_k", "Examples",
    "training_examples", "TwoStageRecommender", "TwoStageResult", "rolling_two_stage",
]
