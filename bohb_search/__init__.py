"""Composition of ``data`` and ``models`` into a detector, in rooms whose imports run one way, bottom up:

    scoring/      every anomaly score of embeddings or reconstruction errors, and the deployed AnomalyModel
    evaluate/     official metrics, tables, submission files, figures, and the ``evaluate`` runner
    train/        run configs, losses, pseudo outliers, the trainers and the ``pretrain``/``finetune`` runners
    tune/         search spaces, the Ray Tune runner (BOHB, random, ASHA), MLflow tracking
    experiments/  the Table 1 ablation and the searcher comparison
    final.py, quickstart.py, cli/   on top: final retrain, the main job, the command line

A room imports only from rooms above it in this list (and from ``data`` and ``models``);
``tests/test_architecture.py`` checks it.
"""

__version__ = "0.1.0"
