"""The settings of one search: what is searched, on which data, with which searcher and budget.

Fine-tuning settings that every trial shares (batch size, seed, …) are not repeated here: they are
``FinetuneConfig`` fields, held in ``finetune`` and overridden per trial by the sampled
hyperparameters. A trial's ``max_epochs`` is the search's Hyperband ``max_t``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..train.configs import FinetuneConfig, strict_from_dict

METRIC = "best_val_score"  # validation score of the selected epoch so far (what final-train keeps)
SEARCHERS = ("bohb", "random")
SCHEDULERS = ("hyperband_bohb", "hyperband", "asha", "fifo")
DEFAULT_SEARCHES_DIR = Path("results/searches")


class SearchError(ValueError):
    """A search that cannot start (name taken, bad settings); one line."""


@dataclass(frozen=True)
class SearchSettings:
    """Everything one search needs; written to ``search_settings.json`` and logged to MLflow."""

    name: str  # the search's folder under storage_path and its MLflow experiment bohb-search/<name>
    data: list[str]  # data roots
    machines: list[str] | None  # machine types of a machine-specific search; None = generalized (all pooled)
    pretrained: str  # encoder.pt written by `pretrain`
    space: str  # search-space YAML file
    num_samples: int = 27  # number of trials
    max_epochs: int = 81  # Hyperband max_t in epochs, and every trial's max_epochs
    min_epochs: int = 1  # epochs per Tune iteration (the smallest budget)
    eta: int = 3  # Hyperband reduction factor
    cpus_per_trial: float = 1.0  # CPUs reserved per trial
    gpus_per_trial: float = 0.0  # GPUs reserved per trial; fractions share one GPU
    max_concurrent: int = 0  # concurrent trials; 0 = as many as resources allow
    max_failures: int = 0  # retries of a failing trial (FailureConfig)
    storage_path: str = str(DEFAULT_SEARCHES_DIR)  # searches are written under <storage_path>/<name>
    tracking_uri: str | None = None  # MLflow tracking URI; None = $MLFLOW_TRACKING_URI or sqlite under results/
    cache_dir: str | None = None  # feature cache root
    device: str = "auto"  # auto, cpu, cuda
    finetune: dict = field(default_factory=dict)  # FinetuneConfig fields every trial shares (batch_size, seed, …)
    searcher: str = "bohb"  # "bohb" (TuneBOHB) | "random" (uniform samples of the same ConfigSpace)
    scheduler: str = "hyperband_bohb"  # "hyperband_bohb" | "hyperband" | "asha" | "fifo" (no early stopping)
    epoch_budget: int = 0  # stop the whole search once this many epochs were trained over all trials (0 = off)

    def __post_init__(self):
        if self.num_samples < 1:
            raise SearchError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.min_epochs < 1 or self.max_epochs < self.min_epochs:
            raise SearchError(f"--min-epochs ({self.min_epochs}) must be >= 1 and <= --max-epochs ({self.max_epochs})")
        if self.max_epochs % self.min_epochs:
            raise SearchError(f"--max-epochs ({self.max_epochs}) must be a multiple of --min-epochs ({self.min_epochs})")
        if self.eta < 2:
            raise SearchError(f"--eta must be >= 2, got {self.eta}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise SearchError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.searcher not in SEARCHERS:
            raise SearchError(f"searcher must be one of {', '.join(SEARCHERS)}, got {self.searcher!r}")
        if self.scheduler not in SCHEDULERS:
            raise SearchError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if (self.searcher == "bohb") != (self.scheduler == "hyperband_bohb"):
            raise SearchError("TuneBOHB needs the HyperBandForBOHB scheduler and vice versa")
        if self.max_concurrent < 0:
            raise SearchError(f"--max-concurrent must be >= 0 (0 = as many as resources allow), got {self.max_concurrent}")
        if self.epoch_budget < 0:
            raise SearchError(f"epoch_budget must be >= 0, got {self.epoch_budget}")
        try:
            self.base_finetune_config()
        except ValueError as err:
            raise SearchError(f"search {self.name}: {err}") from None

    @property
    def out_dir(self) -> Path:
        return Path(self.storage_path).resolve() / self.name

    @property
    def generalized(self) -> bool:
        return self.machines is None

    @property
    def seed(self) -> int:
        """The seed of every trial's trainer and of the searcher."""
        return self.base_finetune_config().seed

    def base_finetune_config(self) -> FinetuneConfig:
        """The FinetuneConfig every trial starts from (its sampled hyperparameters go on top)."""
        return FinetuneConfig.from_dict({**self.finetune, "max_epochs": self.max_epochs})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSettings":
        """Strict, and reads the ``search_settings.json`` of earlier versions (which kept batch_size and
        seed beside the fine-tuning settings, called base_config)."""
        d = dict(d)
        finetune = dict(d.pop("base_config", {}) or {})
        for key in ("batch_size", "seed"):
            if key in d:
                finetune.setdefault(key, d.pop(key))
        finetune.pop("max_epochs", None)
        d["finetune"] = {**finetune, **(d.get("finetune") or {})}
        return strict_from_dict(cls, d)
