"""Training: run configurations, losses, pseudo outliers, the trainers of both stages and the AE
baseline (the only training loops), and the ``pretrain`` / ``finetune`` runners that drive them."""
