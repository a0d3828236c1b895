"""Optional dependencies: the extras of the distribution and one clear error for a missing one.

``pip install retention-companion`` installs the light core: what the command line
(``validate``, ``report``, ``recommend``, ``churn``) and the classical models need. The rest
comes in extras, ``pip install "retention-companion[deep,rank]"``:

=========  ===================================  ==============================================
extra      packages                             needed by
=========  ===================================  ==============================================
``deep``   Keras 3, TensorFlow                  ``deep``, ``compression``, ``embeddings``,
                                                ``explain``, ``models``; the Keras models of
                                                ``ads``, ``churn``, ``content``, ``export``,
                                                ``optim``, ``supply``, ``textgen``,
                                                ``twostage``; ``spark``'s ``tf.distribute``
``rank``   LightGBM                             the LightGBM models of ``ads``, ``supply`` and
                                                ``twostage``
``serve``  FastAPI, uvicorn, httpx, httptools,  the web layer of ``serving`` (``serve``)
           uvloop
``tune``   Optuna                               ``automl.search``
``spark``  PySpark (and a Java runtime)         ``spark``
``data``   openpyxl                             ``data``'s download of UCI's Excel archives
=========  ===================================  ==============================================

A module that cannot work at all without its extra checks for it when it is imported; the
others import an optional package where they use it, through :func:`require`. Either way a
missing extra stops with one line that names the extra and the command that installs it::

    ModuleNotFoundError: companion.recsys.deep needs the 'deep' extra (keras is not installed):
    pip install "retention-companion[deep]"

(printed as a single line).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

DISTRIBUTION = "retention-companion"

#: The packages (import names) each extra provides; ``tests/test_optional.py`` keeps this
#: table in step with ``pyproject.toml``.
EXTRAS = {
    "deep": ("keras", "tensorflow"),
    "rank": ("lightgbm",),
    "serve": ("fastapi", "uvicorn", "httpx", "httptools", "uvloop"),
    "tune": ("optuna",),
    "spark": ("pyspark",),
    "data": ("openpyxl",),
}


def missing_extra(extra: str, package: str, by: str) -> ModuleNotFoundError:
    """The error raised when ``by`` needs ``package`` from ``extra`` and it is not installed."""
    return ModuleNotFoundError(
        f"{by} needs the {extra!r} extra ({package} is not installed): "
        f'pip install "{DISTRIBUTION}[{extra}]"', name=package)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # imported, with no spec (a module made at run time)
        return True


def require(module: str, extra: str, *, load: bool = True) -> ModuleType | None:
    """Import ``module`` (such as ``"keras"`` or ``"keras.ops"``), which the optional
    ``extra`` installs, and return it.

    With ``load=False`` only check that its top-level package is installed, without
    importing it: the guard at the top of a module that cannot work without the extra.

    Raises
    ------
    ModuleNotFoundError
        One line naming the caller's module, the extra and the ``pip install`` command, when
        ``module`` or another package of the same extra (Keras without TensorFlow, say) is
        missing. Any other import error (a broken installation) is raised unchanged.
    ValueError
        For an extra this table does not know.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {sorted(EXTRAS)}.")
    by = sys._getframe(1).f_globals.get("__name__", "this code")
    package = module.partition(".")[0]
    if not load:
        if not _installed(package):
            raise missing_extra(extra, package, by)
        return None
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing != package and missing not in EXTRAS[extra]:
            raise
        raise missing_extra(extra, missing, by) from None
