"""The Ray Tune trainable: one trial is a fine-tuning trainer advanced ``epochs_per_iteration`` epochs
per Tune step, checkpointed through its complete ``state_dict()`` so a trial paused by Hyperband
resumes exactly where it stopped. Built lazily so importing this module does not import Ray."""

from __future__ import annotations

import os
import time
from pathlib import Path

from data.threads import use_threads

from ..train.configs import FinetuneConfig

# the metrics a result dict starts with: Ray Tune's progress table shows the first four numeric
# entries of a trial's result, so these are what a user watching a search sees
PROGRESS_COLUMNS = ("val_score", "best_val_score", "val_auc_source", "val_auc_target")


def progress_first(metrics: dict) -> dict:
    """``metrics`` reordered so the progress table shows the optimised metric and the domain AUCs."""
    return {**{k: metrics[k] for k in PROGRESS_COLUMNS if k in metrics}, **metrics}


def trial_cpus() -> float | None:
    """The CPUs Ray assigned to the calling trial's actor, None outside one (or when Ray reports no CPU)."""
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not in a Ray worker, or an older Ray without the call
        return None
    return cpus or None


def make_trainable():
    """The Ray Tune class trainable (built lazily so importing this module does not import Ray)."""
    from ray import tune

    from models import load_checkpoint, save_checkpoint

    from ..train.setup import build_trainer

    class FinetuneTrainable(tune.Trainable):
        """One trial: a FinetuneTrainer advanced ``epochs_per_iteration`` epochs per Tune step."""

        def setup(self, config, ft_setup=None, space=None, base_config=None, epochs_per_iteration=1,
                  device="auto", threads=1):
            import ray

            # the CPUs Ray reserved for this trial (``threads`` = cpus_per_trial where Ray reports none): concurrent
            # trials then share the cores instead of each spreading over all of them (data.threads says why)
            self.threads = use_threads(trial_cpus() or threads)
            self._args = (ft_setup, space, base_config, device)
            self.epochs_per_iteration = epochs_per_iteration
            self.node_id = ray.get_runtime_context().get_node_id()
            self._build(config)

        def _build(self, config):
            ft_setup, space, base_config, device = self._args
            cfg = space.to_finetune_config(dict(config), FinetuneConfig.from_dict(base_config))
            self.trainer = build_trainer(ft_setup, cfg, device)
            self.restored_from_epoch = 0
            # testing hook (fault injection): trials whose lr exceeds this value raise at their first step
            limit = os.environ.get("BOHB_SEARCH_INJECT_FAULT_LR_ABOVE")
            self.inject_fault = limit is not None and cfg.lr > float(limit)

        def step(self):
            if self.inject_fault:
                raise RuntimeError(f"injected fault (lr={self.trainer.cfg.lr:g} > $BOHB_SEARCH_INJECT_FAULT_LR_ABOVE)")
            t0 = time.perf_counter()
            for _ in range(self.epochs_per_iteration):
                m = self.trainer.step()
                if m["done"]:
                    break
            m = dict(m)
            m["train_seconds"] = time.perf_counter() - t0
            m["torch_threads"] = self.threads  # trials.csv shows each trial's share of the cores
            m["restored_from_epoch"] = self.restored_from_epoch  # 0 = never paused; else the checkpoint's epoch
            early = bool(m.pop("done")) and self.trainer.epoch < self.trainer.cfg.max_epochs
            m["early_stopped"] = early
            if early or self.trainer.epoch >= self.trainer.cfg.max_epochs:
                # early-stopped, or the full budget reached: Tune ends the trial (needed without a
                # Hyperband scheduler, e.g. random search + FIFO, which never stops a trial itself)
                m["done"] = True
            m["node_id"] = self.node_id  # which Ray node ran this step (trials.csv; cluster tests)
            return progress_first(m)

        def reset_config(self, new_config):
            """Actor reuse: a new trial in this worker process gets a fresh trainer (data stay loaded)."""
            self._build(new_config)
            return True

        def save_checkpoint(self, checkpoint_dir):
            save_checkpoint(Path(checkpoint_dir) / "trainer.pt", self.trainer.state_dict())

        def load_checkpoint(self, checkpoint):
            self.trainer.load_state_dict(load_checkpoint(Path(checkpoint) / "trainer.pt"))
            self.restored_from_epoch = self.trainer.epoch

    return FinetuneTrainable
