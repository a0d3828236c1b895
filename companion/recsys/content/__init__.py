"""Content-based, cold-start and context-aware recommendation.

* **Catalogue**: :func:`~companion.recsys.content.catalogue.product_catalogue` gives each
  product's description and list price as known at a cutoff, including products first sold
  later (their launch description and price), so that a model can score products nobody has
  bought yet.
* **Content models** follow the protocol of :mod:`companion.recsys.baselines`:
  :class:`~companion.recsys.content.recommenders.ContentRecommender` builds each customer's
  profile as the (recency-weighted) mean of the vectors of the products they bought and
  scores every product by cosine. The vectors come from
  :class:`~companion.recsys.content.text.TfidfText` (TF-IDF over description words) or
  :class:`~companion.recsys.content.text.TextEncoder` (a Keras encoder of words and
  character trigrams, trained so that products bought in the same basket are close, which
  can embed a product never bought).
  :class:`~companion.recsys.content.recommenders.WordPopularity` and
  :class:`~companion.recsys.content.recommenders.PriceMatch` are the non-learned baselines
  for new products.
* **Cold start**: :func:`~companion.recsys.content.coldstart.cold_start_task` and
  :func:`~companion.recsys.content.coldstart.evaluate_cold` rank only the products first
  sold in a window for the customers with a history who bought them;
  :func:`~companion.recsys.content.coldstart.random_cold` is the random baseline, averaged
  over many orders.
* **Hybrid**: :class:`~companion.recsys.content.recommenders.Hybrid` keeps a collaborative
  model's ranking of products with purchases and gives a never-bought product the
  collaborative scores of its nearest products by description.
* **Context**: :func:`~companion.recsys.content.context.basket_contexts` describes each
  invoice by what is known when the customer arrives (hour, weekday, month, weeks to
  Christmas, country); :func:`~companion.recsys.content.context.basket_task` and
  :func:`~companion.recsys.content.context.evaluate_baskets` score every basket of a window
  against the whole catalogue; :class:`~companion.recsys.content.context.ContextPopularity`
  and :class:`~companion.recsys.content.context.ContextTwoTower` use the context, and the
  two-tower model can be built without it.

Its modules (every public name is also importable from this package):

catalogue
    The catalogue as known at a cutoff.
text
    Product vectors from descriptions.
recommenders
    Content recommenders and the hybrid.
coldstart
    Ranking products nobody has bought yet.
context
    Baskets described by their context, and the models that use it.
"""

from companion.recsys.content.catalogue import (
    product_catalogue,
)
from companion.recsys.content.coldstart import (
    ColdStartTask,
    cold_start_task,
    evaluate_cold,
    random_cold,
    simulate_launches,
)
from companion.recsys.content.context import (
    CONTEXT_FEATURES,
    BasketTask,
    ContextPopularity,
    ContextTwoTower,
    basket_contexts,
    basket_task,
    evaluate_baskets,
    per_customer,
)
from companion.recsys.content.recommenders import (
    ContentRecommender,
    Hybrid,
    PriceMatch,
    WordPopularity,
)
from companion.recsys.content.text import (
    TextEncoder,
    TfidfText,
)

__all__ = [
    "product_catalogue",
    "TfidfText",
    "TextEncoder",
    "ContentRecommender",
    "WordPopularity",
    "PriceMatch",
    "Hybrid",
    "ColdStartTask",
    "cold_start_task",
    "simulate_launches",
    "evaluate_cold",
    "random_cold",
    "CONTEXT_FEATURES",
    "basket_contexts",
    "BasketTask",
    "basket_task",
    "evaluate_baskets",
    "per_customer",
    "ContextPopularity",
    "ContextTwoTower",
]
