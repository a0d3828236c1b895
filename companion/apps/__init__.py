"""Applications beyond recommendation: ads, bandits, text generation, supply chain.

Its modules:

ads
    Ad targeting on web sessions: a time-honest split, deep-and-cross and Wide & Deep
    networks in Keras, calibration and budgeted targeting.
bandits
    Multi-armed and contextual bandits, logged ad data and off-policy evaluation.
textgen
    A small character-level language model of product descriptions, and its baselines.
supply
    Weekly demand forecasting and an order-up-to inventory simulation.
"""
