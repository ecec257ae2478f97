"""Composition layer: losses, pseudo outliers, trainer, evaluation, search (Ray Tune + BOHB),
MLflow tracking, final retrain and the command line (``python -m bohb_search``)."""

__version__ = "0.1.0"
