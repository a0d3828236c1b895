"""Retention: customer behaviour, buy-till-you-die, churn, after-sales, simulation.

Its modules:

behaviour
    Descriptive customer behaviour: activity per month, repeat purchase and cohort
    retention.
btyd
    Buy-till-you-die: the BG/NBD model of repeat buying and dropout, fitted by maximum
    likelihood.
churn
    Churn prediction: time-honest labels, features, models and the numbers a shop acts on.
aftersales
    After-sales: return rates and a time-honest model of which order lines get returned.
simulation
    A retention simulator calibrated to the real shop: does a better recommender bring
    customers back?
explain
    Three ways to look inside a model: permutation importance, integrated gradients,
    attention.
"""
