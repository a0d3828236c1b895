"""A retention simulator calibrated to the real shop: does a better recommender bring
customers back?

Observational purchase logs cannot answer that question: they hold no record of what each
customer was shown, so the effect of a slate on the customer's return cannot be separated
from who the customer is. The simulator makes the mechanism explicit and measurable.

The simulated shop (a :class:`~companion.retention.simulation.world.ShopWorld`) runs in weeks.

* **Who visits.** A customer who has bought before returns in week ``t`` with probability
  ``sigmoid(a_u + s_t + f(gap) + relevance_effect * R_u)``: a customer's own propensity
  ``a_u``, the season ``s_t`` (week of the year), a decreasing function ``f`` of the weeks
  since the last purchase, and ``R_u``, the relevance of the slates the customer saw on
  recent visits. ``a_u``, ``s_t`` and ``f`` are fitted by penalised maximum likelihood on a
  real period (:func:`~companion.retention.simulation.hazard.fit_hazard`); new customers
  arrive in the weeks in which real customers made their first purchase. A visit here is a
  week with a purchase, because the logs record nothing else.
* **What they buy.** A visitor buys a basket whose size is drawn from their own real
  weekly baskets. The items are drawn without replacement from a multinomial logit over
  the available catalogue: taste (the dot product of customer and product vectors of a
  factor model fitted on the real purchases), the product's popularity and season, how
  often the customer bought it before, and a boost for products on the slate. The
  coefficients are fitted by maximum likelihood on the real baskets
  (:func:`~companion.retention.simulation.world.calibrate`).
* **What they see.** A policy (a recommender retrained every ``retrain_weeks`` on the
  logs, the simulated ones included: the feedback loop) shows each visitor a slate of
  ``slate_size`` products. The share of the slate the customer bought is that visit's
  relevance; ``R_u`` is its exponentially weighted average over visits.

The parameters that the data cannot identify are collected in
:class:`~companion.retention.simulation.assumptions.Assumptions`, each with a value and a
reason. Randomness uses common random numbers: the draws that decide
who visits and how much they buy depend only on the seed, the week and the customer, not
on the policy, so two policies differ only through what they show; with
``relevance_effect=0`` every policy produces exactly the same visits.

Its modules (every public name is also importable from this package):

hazard
    When customers come back: weekly activity and the return hazard.
assumptions
    What the simulator assumes where the data cannot tell.
choice
    What a visitor buys: the multinomial logit over the catalogue.
world
    The simulated shop, calibrated to the real one.
policies
    What customers are shown.
engine
    The weekly simulation under one policy.
measures
    Churn, gaps, cohorts and the summary of a run.
runs
    Many runs in worker processes, and offline metrics of their logs.
tables
    The tables and runs of chapter 6.3.
"""

from companion.retention.simulation.assumptions import (
    Assumptions,
)
from companion.retention.simulation.choice import (
    Choice,
    item_seasonality,
)
from companion.retention.simulation.engine import (
    SimulationResult,
    simulate,
)
from companion.retention.simulation.hazard import (
    EARLIER_EDGES,
    GAP_EDGES,
    NEWCOMER_AFTER,
    RECENT_EDGES,
    WEEKS_PER_YEAR,
    Hazard,
    HazardState,
    WeeklyActivity,
    fit_hazard,
    gap_bin,
    gap_labels,
    hazard_panel,
    weekly_activity,
)
from companion.retention.simulation.measures import (
    behaviour_statistics,
    calibration_table,
    churn_rate,
    cohort_retention,
    estimate_relevance_effect,
    gap_histogram,
    gini,
    real_lines,
    run_summary,
)
from companion.retention.simulation.policies import (
    Exploration,
    NoRecommendations,
    Policy,
    RandomSlates,
    RecommenderPolicy,
)
from companion.retention.simulation.runs import (
    BlendWith,
    final_window_task,
    logged_interactions,
    offline_ndcg,
    own_log_summary,
    simulate_many,
)
from companion.retention.simulation.tables import (
    calibration_runs,
    curve_table,
    organic_offline_ndcg,
    policy_table,
)
from companion.retention.simulation.world import (
    ShopWorld,
    calibrate,
)

__all__ = [
    "GAP_EDGES",
    "WEEKS_PER_YEAR",
    "gap_bin",
    "gap_labels",
    "Assumptions",
    "WeeklyActivity",
    "weekly_activity",
    "hazard_panel",
    "RECENT_EDGES",
    "EARLIER_EDGES",
    "NEWCOMER_AFTER",
    "HazardState",
    "Hazard",
    "fit_hazard",
    "Choice",
    "item_seasonality",
    "ShopWorld",
    "calibrate",
    "Policy",
    "NoRecommendations",
    "RandomSlates",
    "RecommenderPolicy",
    "Exploration",
    "SimulationResult",
    "simulate",
    "churn_rate",
    "gap_histogram",
    "cohort_retention",
    "gini",
    "real_lines",
    "behaviour_statistics",
    "calibration_table",
    "run_summary",
    "estimate_relevance_effect",
    "BlendWith",
    "logged_interactions",
    "final_window_task",
    "offline_ndcg",
    "own_log_summary",
    "simulate_many",
    "calibration_runs",
    "policy_table",
    "curve_table",
    "organic_offline_ndcg",
]
