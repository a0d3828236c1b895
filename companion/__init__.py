"""Companion package of the book *Deep and large models for e-commerce retention*.

The package is grouped by the parts of the book. Imports point one way only, down this
list: data, then foundations, then recommender systems, retention, applications and
operations; the modules at the top level use them all (``_checks``, ``_optional`` and
``cache`` are used by all of them).

Package tree
------------
One line per module (a package's modules are indented under it)::

    data/
        schema          the columns of a transactions table, and their checks
        sources         the real UCI files: local copies and verified downloads
        synthetic       the seeded synthetic shop (the offline fallback)
        preprocessing   cleaning, interactions, id encoders, time splits
    foundations/
        losses          losses and their gradients
        optim           teaching optimisers, Newton, conjugate gradients
        nn              initialisation schemes and early stopping
        mlp             a scikit-learn-style Keras MLP classifier
        metrics         classification and ranking metrics
        evaluation      bootstrap intervals and paired comparisons
        embeddings      skip-gram product embeddings
        keras_helpers   seeding and chunked prediction for Keras models
    recsys/
        baselines       the recommender protocol and the classical recommenders
        deep            Keras recommenders (MF, NeuMF, two-tower, SASRec)
        content/        content, cold-start and context recommendation
            catalogue       the catalogue as known at a cutoff
            text            product vectors from descriptions
            recommenders    content recommenders and the hybrid
            coldstart       ranking products nobody has bought yet
            context         baskets by their context, and models using it
        content_studies the studies of chapter 6.4
        twostage/       candidate generators, then a learned ranker
            candidates      stage one and its recall
            features        the pair features, computed before a cutoff
            rankers         LightGBM LambdaRank and a Keras listwise MLP
            pipeline        the two-stage recommender
            study           chapter 5.6's rolling-origin study
        ranking         the evaluation protocol (full ranking)
        experiments     tuning, seeds, rolling windows, the scaling study
        incremental     warm-start updates against full refits
        federated       federated training of a recommender
    retention/
        behaviour       purchase behaviour: RFM, gaps, cohorts
        btyd            the BG/NBD buy-till-you-die model
        churn           time-honest churn labels, features and models
        aftersales      returns and after-sales signals
        simulation/     a retention simulator calibrated to the real shop
            hazard          when customers come back
            assumptions     what the data cannot tell
            choice          what a visitor buys
            world           the simulated shop
            policies        what customers are shown
            engine          the weekly simulation
            measures        churn, gaps and cohorts of a run
            runs            many runs, and offline metrics of their logs
            tables          chapter 6.3's tables
        explain         attributions of a churn model
    apps/
        ads             ad targeting models and their calibration
        bandits         bandits and off-policy evaluation
        textgen         a character-level language model of descriptions
        supply          demand forecasting and an inventory simulation
    ops/
        export          versioned model artifacts, loaded without pickle
        serving/        the recommendation service over HTTP
            config          limits, settings and errors
            served          one loaded model and its precomputed answers
            metrics         request metrics in Prometheus text
            service         the model behind one reference, and reloads
            web             the ASGI app and servers for tests
            loadtest        a bounded load test
            cli             the command line and worker processes
        monitoring      drift and quality monitoring
        compression     pruning, quantisation and distillation
        spark           the pipeline on Apache Spark
        distributed     data-parallel Keras training (tf.distribute)
        scale_out       pandas against Spark, timed
        automl          hyper-parameter search with Optuna
    cli, shop           a shop's own export, end to end, from the command line
    plotting            the book's figures
    book                notebook helpers (glue, tables)
    cache               memoised results, keyed by code and data
    exceptions          NotFittedError, shared by every model
    _checks             input checks with clear errors
    _optional           the extras, and the message when one is missing
    _compat             the names of 0.1.0, kept for one release

Names
-----
One name per idea across the package: ``cutoff`` is the time before which a model or a
feature reads data; ``horizon_days`` the days after it that a label looks at (churn, the
two-stage ranker's labels); ``window_days`` the length of an evaluation or popularity
window; ``neighbours`` a number of neighbours; ``k`` the length of a recommendation list.

The book's API reference page lists every module. A shop can run the pipeline on its own
order export without writing code: ``python -m companion --help`` (:mod:`companion.cli`).
"""

from companion import _compat

__version__ = "0.2.0"

#: Seed used by the book wherever randomness enters.
SEED = 42

_compat.install()
