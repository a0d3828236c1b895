"""The module names of 0.1.0, which still import for one release, with a warning.

In 0.2.0 the flat package of 0.1.0 was grouped into subpackages by book part
(``companion.recommenders`` became :mod:`companion.recsys.baselines`, and so on: see
:data:`MOVED`). So that code written for 0.1.0 keeps working, ``import companion.recommenders``,
``from companion import recommenders`` and ``from companion.recommenders import ItemKNN``
still work: they give a thin alias module that forwards every attribute to the new module
(the same objects, so ``isinstance`` and saved artifacts are unaffected) and raise one
:class:`DeprecationWarning` naming the new place. The aliases go in 0.3.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: old module name (``companion.<name>``) -> the module that holds its code since 0.2.0
MOVED: dict[str, str] = {
    "preprocessing": "companion.data.preprocessing",
    "losses": "companion.foundations.losses",
    "optim": "companion.foundations.optim",
    "nn": "companion.foundations.nn",
    "models": "companion.foundations.mlp",
    "metrics": "companion.foundations.metrics",
    "evaluation": "companion.foundations.evaluation",
    "embeddings": "companion.foundations.embeddings",
    "recommenders": "companion.recsys.baselines",
    "deep": "companion.recsys.deep",
    "content": "companion.recsys.content",
    "twostage": "companion.recsys.twostage",
    "ranking": "companion.recsys.ranking",
    "experiments": "companion.recsys.experiments",
    "incremental": "companion.recsys.incremental",
    "federated": "companion.recsys.federated",
    "behaviour": "companion.retention.behaviour",
    "btyd": "companion.retention.btyd",
    "churn": "companion.retention.churn",
    "aftersales": "companion.retention.aftersales",
    "simulation": "companion.retention.simulation",
    "explain": "companion.retention.explain",
    "ads": "companion.apps.ads",
    "bandits": "companion.apps.bandits",
    "textgen": "companion.apps.textgen",
    "supply": "companion.apps.supply",
    "export": "companion.ops.export",
    "serving": "companion.ops.serving",
    "monitoring": "companion.ops.monitoring",
    "compression": "companion.ops.compression",
    "spark": "companion.ops.spark",
    "automl": "companion.ops.automl",
}
REMOVED_IN = "0.3.0"


class _Alias(types.ModuleType):
    """A module that forwards attribute access to the module that took its place."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, f"Alias of {target} (deprecated; removed in {REMOVED_IN}).")
        self.__target = target

    def _module(self) -> types.ModuleType:
        return importlib.import_module(self.__target)

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._module(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._module())


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``companion.<old name>`` and loads it as an :class:`_Alias`."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != "companion" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        target = MOVED[spec.name.partition(".")[2]]
        _warn_moved(spec.name, target, stacklevel=2)  # warnings skips the import system's frames
        return _Alias(spec.name, target)

    def exec_module(self, module) -> None:
        module._module()  # import the target now, so that a broken one fails here


def _warn_moved(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{old} moved to {new} in 0.2.0; the old name is removed in {REMOVED_IN}. "
                  f"Import {new} instead.", DeprecationWarning, stacklevel=stacklevel + 1)


def moved_names(module: str, targets: dict[str, str]):
    """A module ``__getattr__`` for names that left ``module``: ``targets`` maps each old
    name to the module that holds it now. The old name gives the same object, with the
    same :class:`DeprecationWarning` as a moved module."""

    def __getattr__(name: str):
        if name not in targets:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        _warn_moved(f"{module}.{name}", f"{targets[name]}.{name}", stacklevel=2)
        return getattr(importlib.import_module(targets[name]), name)

    return __getattr__


def renamed_argument(owner: str, old: str, new: str, old_value: object, new_value: object,
                     default: object = None, *, required: bool = False) -> object:
    """The value of argument ``new`` of ``owner``, which was called ``old`` before 0.2.0.

    ``old_value`` is what the caller passed under the old name (``None`` when nothing was
    passed) and ``new_value`` what it passed under the new one (``default`` when nothing
    was). The old name still works for one release, with a :class:`DeprecationWarning`;
    both at once is a TypeError, and so is neither when ``required``.
    """
    if old_value is None:
        if required and new_value is None:
            raise TypeError(f"{owner} needs {new}.")
        return new_value
    if new_value is not default:
        raise TypeError(f"{owner} got {new}= and its old name {old}=; pass {new} only.")
    warnings.warn(f"{owner}: the argument {old} was renamed {new} in 0.2.0; {old} is "
                  f"removed in {REMOVED_IN}.", DeprecationWarning, stacklevel=3)
    return old_value


def install() -> None:
    """Put the finder of the old names on :data:`sys.meta_path` (once)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
