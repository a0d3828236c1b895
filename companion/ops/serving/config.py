"""Limits, settings and errors of the recommendation service's requests."""

import logging
import re

from companion.recsys import baselines as rec

#: items in an answer unless ``k`` says otherwise
DEFAULT_K = 10
#: the largest ``k``, and the depth of the precomputed top lists
MAX_K = 100
#: most customers in one ``POST /recommend``
MAX_BATCH = 1000
#: most product ids in one history
MAX_HISTORY = 1000
#: largest request body accepted, in bytes (a batch of MAX_BATCH long ids fits easily)
MAX_BODY = 256 * 1024
#: seconds a request may take, body included, before it is answered with 503
REQUEST_TIMEOUT = 10.0
#: seconds a reload may take (loading, precomputing and waiting for the other workers)
RELOAD_TIMEOUT = 300.0
#: customers whose top lists are precomputed at load (the most active first)
DEFAULT_PRECOMPUTE = 200_000
#: the environment variable that holds the bearer token of ``POST /reload``
TOKEN_ENV = "COMPANION_RELOAD_TOKEN"
#: the environment variable that names the models folder (``--models-dir``)
MODELS_ENV = "COMPANION_MODELS_DIR"
#: the environment variable that passes a worker process its configuration (JSON)
WORKER_ENV = "COMPANION_SERVING_WORKER"
#: a caller's X-Request-ID is kept when it matches this (a plain token)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

access_log = logging.getLogger("companion.access")
log = logging.getLogger("companion.ops.serving")


def default_model() -> rec.Recommender:
    """The model ``serve`` fits when given no artifact: the customer's own past items
    (repeat-buy, half-life 90 days) blended with item-kNN, a strong model of chapter 5
    that fits in seconds on the full shop."""
    return rec.Blend(rec.ItemKNN(), weight=4.0)


class RequestError(ValueError):
    """A problem with the request (answered with ``status``, 422 by default)."""

    status = 422


class Unauthorized(RequestError):
    """No or a wrong bearer token (401)."""

    status = 401


class Forbidden(RequestError):
    """Switched off, or a path outside the models folder (403)."""

    status = 403
