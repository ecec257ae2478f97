"""A score-level ensemble of trained models (e.g. the pOE and the margin objective, or several seeds).

Each model's scores are standardised per machine with the mean and standard deviation of *its own*
training clips' scores (leave-one-out for k-NN banks), so models on different scales count alike, and
the standardised scores are averaged. The decision threshold of a machine is the average of the
models' standardised thresholds. Nothing about the scored clips enters any statistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import AnomalyModel, ScoredFile


class EnsembleModel:
    """The mean of several models' standardised scores; scores clips and files as :class:`AnomalyModel`."""

    def __init__(self, models: list[AnomalyModel]):
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        machines = [set(m.machines) for m in models]
        if any(ms != machines[0] for ms in machines):
            raise ValueError("the models of an ensemble must cover the same machines: "
                             + "; ".join(", ".join(sorted(ms)) for ms in machines))
        features = {m.feature_cfg.key() for m in models}
        self.models = models
        self.machines = sorted(machines[0])
        self.feature_cfgs = [m.feature_cfg for m in models]
        self.same_features = len(features) == 1
        self.feature_cfg = models[0].feature_cfg
        self.model_kind = "ensemble"
        self.bundle = {"selection": _common_selection(models)}
        self.score_label = " + ".join(m.score_label for m in models)
        self.stats = [self._stats(m) for m in models]  # per model: {machine: (mean, std)}
        self.thresholds = {}
        for machine in self.machines:
            parts = [(m.thresholds[machine] - st[machine][0]) / st[machine][1]
                     for m, st in zip(models, self.stats) if machine in m.thresholds]
            if len(parts) == len(models):
                self.thresholds[machine] = float(np.mean(parts))

    @staticmethod
    def _stats(model: AnomalyModel) -> dict[str, tuple[float, float]]:
        scores, machines = model.training_scores()
        out = {}
        for machine in sorted(set(machines)):
            s = scores[(machines == machine) & np.isfinite(scores)]
            out[str(machine)] = (float(np.mean(s)), float(max(np.std(s), 1e-12)))
        return out

    @classmethod
    def load(cls, paths: list[str | Path], score=None) -> "EnsembleModel":
        return cls([AnomalyModel.load(p, score=score) for p in paths])

    def standardise(self, i: int, scores: np.ndarray, machines) -> np.ndarray:
        machines = np.broadcast_to(np.asarray(machines, dtype=object), scores.shape)
        mean = np.array([self.stats[i][m][0] for m in machines])
        std = np.array([self.stats[i][m][1] for m in machines])
        return (scores - mean) / std

    def combine(self, per_model: list[np.ndarray], machines) -> np.ndarray:
        """The ensemble score of clips that every model has scored: mean of standardised scores."""
        return np.mean([self.standardise(i, s, machines) for i, s in enumerate(per_model)], axis=0)

    def score_features(self, features: np.ndarray, machines=None, features_of=None) -> np.ndarray:
        """``features`` for models that read the same log-mels; ``features_of(i)`` gives model i's otherwise."""
        if machines is None:
            if len(self.machines) != 1:
                raise ValueError(f"the ensemble covers several machines ({', '.join(self.machines)}): say which")
            machines = self.machines[0]
        per_model = [m.score_features(features if features_of is None else features_of(i), machines)
                     for i, m in enumerate(self.models)]
        return self.combine(per_model, machines)

    def score_files(self, paths, machine: str | None = None, channel=0, on_bad_file: str = "fail"):
        """Each model scores the files its own way (windows of its clip length); the means are combined."""
        if machine is None and len(self.machines) == 1:
            machine = self.machines[0]
        if machine is None:
            raise ValueError(f"the ensemble covers several machines ({', '.join(self.machines)}): give --machine")
        if machine not in self.machines:
            raise ValueError(f"--machine {machine}: the models were trained on {', '.join(self.machines)}")
        runs = [m.score_files(paths, machine, channel, on_bad_file) for m in self.models]
        skipped = runs[0][1]
        by_path = [{r.path: r for r in results} for results, _ in runs]
        thr = self.thresholds.get(machine)
        out = []
        for r in runs[0][0]:
            means = [self.standardise(i, np.array([by_path[i][r.path].score]), machine)[0] for i in range(len(runs))]
            maxes = [self.standardise(i, np.array([by_path[i][r.path].max_window_score]), machine)[0]
                     for i in range(len(runs))]
            score = float(np.mean(means))
            out.append(ScoredFile(r.path, score, float(np.mean(maxes)), r.windows,
                                  None if thr is None else int(score > thr)))
        return out, skipped


def _common_selection(models: list[AnomalyModel]) -> str:
    """How the ensemble was selected, for deciding which clips its tables report on."""
    kinds = {m.bundle.get("selection", "") for m in models}
    if "whole test split" in kinds:
        return "whole test split"
    if "validation part" in kinds:
        return "validation part"
    return kinds.pop() if len(kinds) == 1 else "held-out normals"
