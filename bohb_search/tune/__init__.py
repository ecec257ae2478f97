"""Hyperparameter search: YAML search spaces, BOHB and random searchers with their schedulers in
Ray Tune, the trainable, one MLflow run per trial, and the runner that puts them together."""
