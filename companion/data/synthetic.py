"""A seeded synthetic shop with the schema of the real data, and its hidden truth.

It stands in for the real files offline and is the fixture of the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_in, check_positive_int, check_timestamp
from companion.data.schema import I_TO_II

_CATEGORIES = {
    "candles": ("T-LIGHT HOLDER", "CANDLE", "LANTERN", "TEALIGHTS"),
    "kitchen": ("MUG", "CAKE STAND", "TEA TOWEL", "LUNCH BOX"),
    "bags": ("JUMBO BAG", "SHOPPER", "CHARLOTTE BAG", "PURSE"),
    "paper": ("GREETING CARD", "WRAP", "NOTEBOOK", "PARTY BUNTING"),
    "home": ("CUSHION COVER", "CLOCK", "DOORMAT", "PHOTO FRAME"),
    "christmas": ("CHRISTMAS BAUBLE", "ADVENT CALENDAR", "STOCKING", "WREATH"),
    "garden": ("PLANT POT", "WATERING CAN", "BIRD HOUSE", "GARDEN SIGN"),
    "toys": ("SPACEBOY", "DOLLY GIRL", "JIGSAW", "SKIPPING ROPE"),
}
_STYLES = ("WHITE", "RED RETROSPOT", "VINTAGE", "PINK POLKADOT", "REGENCY", "BLUE",
           "HEART", "PAISLEY", "SPOTTY", "GREEN", "SKULL", "FLORAL")
_COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands")
_COUNTRY_P = (0.88, 0.03, 0.03, 0.03, 0.015, 0.015)
_PACK_SIZES = np.array([1, 2, 3, 4, 6, 8, 12, 24, 48])
_PACK_P = np.array([0.12, 0.14, 0.08, 0.1, 0.16, 0.06, 0.22, 0.09, 0.03])


@dataclass
class SyntheticTruth:
    """The hidden variables behind :func:`synthetic_shop`, for tests and teaching.

    Attributes
    ----------
    customers
        One row per customer: ``CustomerID``, ``Country``, ``first_visit``, ``churn_date``
        (``NaT`` for customers who never churn), ``rate`` (baskets per 30 days),
        ``favourite_category`` and ``repeat_prob``.
    products
        One row per product: ``StockCode``, ``Description``, ``category``, ``popularity``
        (the Zipf weight) and ``UnitPrice``.
    tastes
        Array (customers x categories) of each customer's category preferences.
    """

    customers: pd.DataFrame
    products: pd.DataFrame
    tastes: np.ndarray


def synthetic_shop(
    n_customers: int = 400,
    n_products: int = 300,
    *,
    start: str = "2010-12-01",
    months: int = 12,
    seed: int = 0,
    schema: str = "I",
    dirty: bool = True,
    return_truth: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, SyntheticTruth]:
    """Simulate an online giftware shop with the Online Retail schema, offline and seeded.

    The generative story:

    * **Products** fall into eight categories (candles, kitchen, bags, ...). Their
      popularity follows a Zipf law (weight ``1 / rank**1.1``), so a few items sell a lot
      and most sell little: the long tail. Prices are log-normal per category.
    * **Customers** each have a taste over categories (Dirichlet, concentrated on one or
      two), a shopping rate (gamma distributed; a few wholesalers buy often and in bulk),
      a country (mostly the UK) and a first visit spread over the first three quarters of
      the period, which creates monthly cohorts.
    * **Churn**: after a customer-specific lifetime (exponential, mean nine months) a
      customer stops buying for good; a quarter of customers never churn. Customers who
      are about to churn also slow down over their last three months.
    * **Seasonality**: every rate is scaled by ``1 + 0.6 cos(2 pi (month - 11) / 12)``, a
      peak in November, as for a gift shop.
    * **Baskets**: each visit buys ``1 + Poisson`` distinct items; each item is, with the
      customer's repeat probability, a re-purchase drawn from their own history
      (weighted by past counts), and otherwise a new draw: category from taste, product
      from popularity within the category. Quantities come in pack sizes.
    * **Cancellations**: 2% of lines are cancelled a few days later by a ``C`` invoice
      with negative quantity.
    * **Dirt** (``dirty=True``): 8% of baskets come from guests without a customer id,
      5% of baskets carry a ``POST`` postage line, 0.3% of lines have a zero price,
      0.5% of lines are exact duplicates, and a fifth of descriptions carry stray spaces.

    Parameters
    ----------
    n_customers, n_products
        Size of the shop.
    start, months
        First day and length of the simulated period.
    seed
        Seed of the random generator; the same seed gives the same shop.
    schema
        ``"I"`` for the Online Retail column names, ``"II"`` for Online Retail II names.
    dirty
        Add the rows that cleaning rules exist for.
    return_truth
        Also return the hidden variables as a :class:`SyntheticTruth`.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, SyntheticTruth)
        Invoice lines sorted by date, with the dtypes of the real files.
    """
    check_positive_int(n_customers, name="n_customers", minimum=2)
    check_positive_int(n_products, name="n_products", minimum=len(_CATEGORIES))
    check_positive_int(months, name="months")
    check_in(schema, ("I", "II"), name="schema")
    t0 = check_timestamp(start, name="start").normalize()
    t1 = t0 + pd.DateOffset(months=months)
    span_days = (t1 - t0).days
    rng = np.random.default_rng(seed)
    cats = list(_CATEGORIES)
    n_cat = len(cats)

    # Products: category, Zipf popularity, price, unique stock codes and descriptions.
    prod_cat = np.arange(n_products) % n_cat
    rng.shuffle(prod_cat)
    popularity = 1.0 / (rng.permutation(n_products) + 1.0) ** 1.1
    cat_price = rng.uniform(0.6, 4.0, n_cat)
    price = np.round(cat_price[prod_cat] * rng.lognormal(0.0, 0.45, n_products), 2)
    price = np.maximum(price, 0.19)
    codes = 20000 + rng.choice(70000, size=n_products, replace=False)
    suffix = rng.choice(["", "", "", "A", "B", "C"], size=n_products)
    stock = np.array([f"{c}{s}" for c, s in zip(codes, suffix, strict=True)])
    desc = []
    seen_desc: set[str] = set()
    for j in range(n_products):
        nouns = _CATEGORIES[cats[prod_cat[j]]]
        text = f"{rng.choice(_STYLES)} {rng.choice(nouns)}"
        while text in seen_desc:
            text = f"{text} {rng.choice(('SMALL', 'LARGE', 'SET OF 3', 'MINI', 'XL'))}"
        seen_desc.add(text)
        desc.append(text)
    desc = np.array(desc, dtype=object)
    by_cat = [np.flatnonzero(prod_cat == k) for k in range(n_cat)]
    cat_p = [popularity[idx] / popularity[idx].sum() for idx in by_cat]

    # Customers.
    tastes = rng.dirichlet(np.full(n_cat, 0.25), size=n_customers)
    rate = rng.gamma(1.2, 1.0, n_customers)  # baskets per 30 days
    wholesaler = rng.random(n_customers) < 0.1
    rate[wholesaler] *= 3
    first = rng.uniform(0, 0.75 * span_days, n_customers)
    lifetime = rng.exponential(270.0, n_customers)
    never = rng.random(n_customers) < 0.25
    churn_day = np.where(never, np.inf, first + lifetime)
    repeat_prob = rng.beta(4, 4, n_customers)
    country = rng.choice(_COUNTRIES, p=_COUNTRY_P, size=n_customers)
    customer_ids = 12346 + rng.choice(6000, size=n_customers, replace=False)

    def season(day: np.ndarray) -> np.ndarray:
        month = (t0 + pd.to_timedelta(day, unit="D")).month.to_numpy()
        return 1.0 + 0.6 * np.cos(2 * np.pi * (month - 11) / 12)

    rows: list[tuple] = []  # (day, customer index or -1, product index, quantity)
    basket_days: list[float] = []
    basket_owner: list[int] = []
    for u in range(n_customers):
        end = min(churn_day[u], span_days)
        if end <= first[u]:
            continue
        # Thinning of a Poisson process with rate <= rate*1.6 per 30 days.
        lam_max = rate[u] * 1.6 / 30.0
        n_cand = rng.poisson(lam_max * (end - first[u]))
        cand = np.sort(rng.uniform(first[u], end, n_cand))
        accept = season(cand) / 1.6
        slowing = np.where(end - cand < 90, 0.5, 1.0) if np.isfinite(churn_day[u]) else 1.0
        days = cand[rng.random(n_cand) < accept * slowing]
        if len(days) == 0:
            days = np.array([first[u]])
        history: dict[int, int] = {}
        for day in days:
            size = 1 + rng.poisson(12 if wholesaler[u] else 5)
            chosen: set[int] = set()
            for _ in range(size * 3):
                if len(chosen) >= size:
                    break
                if history and rng.random() < repeat_prob[u]:
                    items = np.fromiter(history, dtype=int)
                    weights = np.fromiter(history.values(), dtype=float)
                    j = int(rng.choice(items, p=weights / weights.sum()))
                else:
                    k = rng.choice(n_cat, p=tastes[u])
                    j = int(rng.choice(by_cat[k], p=cat_p[k]))
                chosen.add(j)
            for j in chosen:
                history[j] = history.get(j, 0) + 1
                qty = int(rng.choice(_PACK_SIZES, p=_PACK_P)) * (4 if wholesaler[u] else 1)
                rows.append((day, u, j, qty))
            basket_days.append(day)
            basket_owner.append(u)

    # Guests: baskets without a customer id.
    n_guest = int(0.08 * len(basket_days)) if dirty else 0
    for day in rng.uniform(0, span_days, n_guest):
        for j in rng.choice(n_products, size=1 + rng.poisson(3), p=popularity / popularity.sum()):
            rows.append((day, -1, int(j), int(rng.choice(_PACK_SIZES, p=_PACK_P))))

    lines = pd.DataFrame(rows, columns=["day", "u", "j", "Quantity"])
    # Whole minutes during shop hours, shared by all lines of a basket.
    lines["day"] = np.floor(lines["day"]) + (8 + (lines["day"] % 1) * 10) / 24
    lines["InvoiceDate"] = (t0 + pd.to_timedelta(lines["day"], unit="D")).dt.floor("min")
    lines = lines.sort_values(["InvoiceDate", "u", "j"], kind="stable").reset_index(drop=True)
    basket_key = lines["InvoiceDate"].astype("int64").astype(str) + "_" + lines["u"].astype(str)
    lines["InvoiceNo"] = (536365 + pd.factorize(basket_key)[0]).astype(str)
    is_guest = lines["u"].to_numpy() < 0
    uidx = np.where(is_guest, 0, lines["u"].to_numpy())
    frame = pd.DataFrame({
        "InvoiceNo": lines["InvoiceNo"],
        "StockCode": stock[lines["j"]],
        "Description": desc[lines["j"]],
        "Quantity": lines["Quantity"].astype("int64"),
        "InvoiceDate": lines["InvoiceDate"],
        "UnitPrice": price[lines["j"]],
        "CustomerID": np.where(is_guest, np.nan, customer_ids[uidx].astype(float)),
        "Country": np.where(is_guest, "United Kingdom", country[uidx]),
    })

    extra = []
    # Cancellations: a C invoice a few days later with the negative quantity.
    cancel = frame[(rng.random(len(frame)) < 0.02) & frame["CustomerID"].notna()].copy()
    cancel["InvoiceDate"] = cancel["InvoiceDate"] + pd.to_timedelta(
        rng.integers(1, 10, len(cancel)), unit="D"
    )
    cancel = cancel[cancel["InvoiceDate"] < t1]
    cancel["Quantity"] = -cancel["Quantity"]
    cancel["InvoiceNo"] = "C" + (600000 + np.arange(len(cancel))).astype(str)
    extra.append(cancel)
    if dirty:
        invoices = frame.drop_duplicates("InvoiceNo")
        post = invoices[rng.random(len(invoices)) < 0.05].copy()
        post["StockCode"], post["Description"] = "POST", "POSTAGE"
        post["Quantity"], post["UnitPrice"] = 1, 18.0
        extra.append(post)
        extra.append(frame.sample(frac=0.005, random_state=seed))  # exact duplicates
        zero = rng.random(len(frame)) < 0.003
        frame.loc[zero, "UnitPrice"] = 0.0
        spaced = rng.random(len(frame)) < 0.2
        frame.loc[spaced, "Description"] = frame.loc[spaced, "Description"] + " "
    frame = pd.concat([frame, *extra], ignore_index=True)
    frame = frame.sort_values("InvoiceDate", kind="stable").reset_index(drop=True)
    frame["InvoiceDate"] = frame["InvoiceDate"].astype("datetime64[us]")
    for col in ("InvoiceNo", "StockCode", "Description", "Country"):
        frame[col] = frame[col].astype("string")
    if schema == "II":
        frame = frame.rename(columns=I_TO_II)
    if not return_truth:
        return frame
    customers = pd.DataFrame({
        "CustomerID": customer_ids,
        "Country": country,
        "first_visit": t0 + pd.to_timedelta(first, unit="D"),
        "churn_date": [
            t0 + pd.Timedelta(days=float(d)) if np.isfinite(d) and d < span_days else pd.NaT
            for d in churn_day
        ],
        "rate": rate,
        "favourite_category": [cats[k] for k in tastes.argmax(axis=1)],
        "repeat_prob": repeat_prob,
    })
    products = pd.DataFrame({
        "StockCode": stock, "Description": desc, "category": [cats[k] for k in prod_cat],
        "popularity": popularity, "UnitPrice": price,
    })
    return frame, SyntheticTruth(customers=customers, products=products, tastes=tastes)


# --------------------------------------------------------------------------------------
