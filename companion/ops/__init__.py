"""Operations: exporting, serving, monitoring, compressing, scaling out and tuning models.

Its modules:

export
    Save fitted recommenders to disk and load them back, without pickle.
serving
    A recommendation service over HTTP (FastAPI on uvicorn), ready for production.
monitoring
    Monitoring a deployed recommender: drift of data and predictions, and delayed labels.
compression
    Optimising and compressing a recommender: depth against width, regularisation,
    distillation, magnitude and structured pruning, and int8 quantisation.
spark
    The book's pipeline on Apache Spark: the same tables and metrics as the pandas path.
distributed
    Training a Keras model with ``tf.distribute`` on several CPU replicas.
scale_out
    Chapter 7.2's check of the two engines: the pandas and Spark paths timed and compared.
automl
    Hyper-parameter search with a budget: Optuna's samplers behind one small function.
"""
