"""What the simulator assumes where the data cannot tell (:class:`Assumptions`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from companion._checks import check_positive_int


@dataclass(frozen=True)
class Assumptions:
    """What the simulator assumes where the data say nothing, with the reason for each value.

    Attributes
    ----------
    slate_size
        Products shown per visit: 10, the length of the top-10 lists chapter 5 evaluates.
    relevance_effect
        How strongly experienced relevance raises the weekly log-odds of returning
        (``gamma``). Purchase logs without exposure logs cannot identify it. The default 0.5
        means that a customer who bought every product of their recent slates (``R = 1``)
        returns each week with ``exp(0.5) = 1.65`` times the odds of one who saw none, and
        one wanted product in ten (``R = 0.1``) raises the odds by 5%. It was chosen so that
        the best policy lowers 90-day churn by a few percentage points, the order of
        magnitude reported for deployed recommenders (Gomez-Uribe and Hunt, 2015; Jannach
        and Jugovac, 2019). The chapter shows how the conclusions move with it.
    relevance_memory
        Weight of the newest visit in the moving average ``R_u`` (0.5: the last visit counts
        as much as all earlier ones together; experiences fade within a few visits).
    exposure_boost
        Added to the log-odds of choosing a product that is on the slate: ``log 2`` (showing a
        product doubles the odds that a visitor picks it). Not identifiable from these logs;
        its size sets how much the slates shape purchases and so the feedback loop.
    retrain_weeks
        Weeks between refits of a learning policy: 4 (monthly, as many shops do).
    history_weeks
        Weeks of logs a policy is refitted on: 52 (chapter 5.5's scaling study found a year
        of history better than two for matrix factorisation; it also bounds the cost).
    """

    slate_size: int = 10
    relevance_effect: float = 0.5
    relevance_memory: float = 0.5
    exposure_boost: float = float(np.log(2.0))
    retrain_weeks: int = 4
    history_weeks: int = 52

    def __post_init__(self) -> None:
        check_positive_int(self.slate_size, name="slate_size")
        check_positive_int(self.retrain_weeks, name="retrain_weeks")
        check_positive_int(self.history_weeks, name="history_weeks")
        for name in ("relevance_effect", "exposure_boost"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not 0 < self.relevance_memory <= 1:
            raise ValueError(f"relevance_memory must be in (0, 1], got "
                             f"{self.relevance_memory!r}.")

    def table(self) -> pd.DataFrame:
        """One row per assumption with its value (for the chapter)."""
        return pd.DataFrame({"value": {f.name: getattr(self, f.name) for f in fields(self)}})
