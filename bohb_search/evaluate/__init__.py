"""Evaluation: the official DCASE metrics (the only place AUC/pAUC are computed), results tables,
submission files, figures, and the ``evaluate`` runner that scores a model's test clips."""
