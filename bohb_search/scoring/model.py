"""A trained detector as users deploy it: checkpoint → log-mel → anomaly score (+ decision).

The checkpoint written by ``finetune`` / ``final-train`` / ``baseline`` is self-contained: feature
config, network weights, and the training clips' embeddings (or, for the AE, the statistics of its
reconstruction errors) from which the anomaly score is fitted when the model is loaded — with the
score the model was trained with, or any other (``evaluate --score …``) without retraining. Decision
thresholds are fitted per machine on the training clips' (leave-one-out) scores. Checkpoints of
earlier versions (one k-NN bank per domain, thresholds stored) still load and score as before.
Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.audio import AudioConfig, BadAudioError, fit_length, load_any_length
from data.features import FeatureConfig, LogMelExtractor
from models import (
    AEConfig,
    AnomalyHead,
    CheckpointError,
    DCASEAutoencoder,
    EncoderConfig,
    MahalanobisModel,
    build_encoder,
    load_checkpoint,
    load_weights,
    reconstruction_errors,
)

from .banks import EmbeddingScorer
from .config import ScoreConfig, StatsBaselineConfig
from .decision import fit_gamma_threshold
from .scores import autoencoder_scores
from .statistics import fit_stats_scorer, stats_embeddings

MODEL_KIND = "anomaly_model"


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
AE_SCORES = ("mse", "mahalanobis")


@dataclass
class ScoredFile:
    path: str
    score: float  # mean over windows of the training clip length
    max_window_score: float
    windows: int
    decision: int | None  # 1 = anomalous (score above the machine's threshold), None = no threshold


def _scoring_tensors(bundle: dict):
    """(name, tensor) of everything a model's score is computed from: the network weights, the centre, the
    training clips' embeddings and patch statistics, the k-NN banks of earlier versions, the AE's weights and
    statistics, the statistics yardstick's training embeddings."""
    def walk(value, name):
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{name}[{k!r}]" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield from walk(v, f"{name}[{i}]")

    for key in ("encoder", "head", "center", "train_embeddings", "train_patch_stats", "knn_bank", "ae", "ae_stats"):
        if bundle.get(key) is not None:
            yield from walk(bundle[key], key)
    for machine, st in (bundle.get("stats") or {}).items():
        if isinstance(st, dict) and st.get("train_embeddings") is not None:
            yield from walk(st["train_embeddings"], f"stats[{machine!r}]['train_embeddings']")


def check_finite(bundle: dict) -> None:
    """Refuse a model whose score would be computed from NaN or ±Inf (a diverged training run, a damaged
    file): its every score would be NaN, silently. The message names the first such tensor."""
    for name, t in _scoring_tensors(bundle):
        if t.is_floating_point() or t.is_complex():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                raise ValueError(f"the tensor {name} holds {int(bad.sum())} NaN/Inf value(s) of {t.numel()}: "
                                 f"every score would be NaN; retrain the model")


def _legacy_training_embeddings(bundle: dict) -> tuple[torch.Tensor, list[int], list[str]]:
    """Checkpoints before the score banks kept one k-NN bank per domain (all machines pooled)."""
    bank = bundle.get("knn_bank") or {}
    parts = [(bank[d].float(), i) for i, d in enumerate(("source", "target")) if d in bank]
    if not parts:
        raise ValueError("checkpoint has no training embeddings to fit a score on")
    z = torch.cat([p for p, _ in parts])
    domains = [i for p, i in parts for _ in range(len(p))]
    group = bundle["machines"][0] if len(bundle["machines"]) == 1 else "all"
    return z, domains, [group] * len(z)


class AnomalyModel:
    """Scores log-mel clips with a fine-tuned encoder + head, or with the AE baseline.

    ``score`` re-scores with another setting: a :class:`ScoreConfig` (or a dict of its fields) for an
    embedding model, ``"mse"`` or ``"mahalanobis"`` for the AE.
    """

    def __init__(self, bundle: dict, device: str | torch.device = "cpu", score=None):
        if bundle.get("kind") != MODEL_KIND:
            raise ValueError(f"not an anomaly-model checkpoint (kind={bundle.get('kind')!r})")
        check_finite(bundle)
        self.bundle = bundle
        self.device = torch.device(device)
        self.model_kind: str = bundle["model_kind"]
        self.feature_cfg = FeatureConfig.from_dict(bundle["feature_config"])
        self.machines: list[str] = list(bundle["machines"])
        self.threshold_percentile = float(bundle.get("threshold_percentile", 0.9))
        self.legacy = self.model_kind != "stats" and "train_embeddings" not in bundle and "ae_train_scores" not in bundle
        if self.model_kind == "ae":
            self._init_ae(bundle, score)
        elif self.model_kind == "stats":
            self._init_stats(bundle, score)
        else:
            self._init_embedding_model(bundle, score)
        if self.legacy and score is None:
            self.thresholds: dict[str, float] = dict(bundle.get("thresholds", {}))
        else:
            self.thresholds = self._fit_thresholds()

    def _init_ae(self, bundle: dict, score) -> None:
        self.ae = DCASEAutoencoder(AEConfig.from_dict(bundle["ae_config"]))
        load_weights(self.ae, bundle["ae"], "autoencoder weights")
        self.ae.to(self.device).eval()
        self.score_method = str(score or bundle.get("score", "mse"))
        if self.score_method not in AE_SCORES:
            raise ValueError(f"the AE baseline scores by {' or '.join(AE_SCORES)}, not {self.score_method!r}")
        stats = bundle.get("ae_stats")
        self.mahalanobis = MahalanobisModel.from_dict(stats) if stats else None
        if self.score_method == "mahalanobis" and self.mahalanobis is None:
            raise ValueError("this AE checkpoint has no Mahalanobis statistics: it can only score by mse")
        self.score_label = self.score_method

    def _init_stats(self, bundle: dict, score) -> None:
        """The statistics yardstick: one scorer per machine (each machine may pool differently)."""
        if score is not None and (not isinstance(score, dict) or set(score) - {"knn_k"}):
            raise ValueError(f"the statistics baseline is re-scored only with another knn_k (its pooling is fitted), "
                             f"not {score!r}")
        self.stats_cfg = StatsBaselineConfig.from_dict({**bundle["stats_config"], **(score or {})})
        self.stats = {m: dict(v) for m, v in bundle["stats"].items()}
        self.scorers = {m: fit_stats_scorer(v["train_embeddings"].float(), list(v["train_domains"]), m, self.stats_cfg)
                        for m, v in self.stats.items()}
        poolings = sorted({v["pooling"] for v in self.stats.values()})
        self.score_label = f"stats-{poolings[0] if len(poolings) == 1 else 'per-machine'}-knn"

    def _init_embedding_model(self, bundle: dict, score) -> None:
        self.encoder_cfg = EncoderConfig.from_dict(bundle["encoder_config"])
        self.encoder = build_encoder(self.encoder_cfg)
        load_weights(self.encoder, bundle["encoder"], "encoder weights")
        self.encoder.to(self.device).eval()
        h = bundle["head_config"]
        self.head = AnomalyHead(self.encoder_cfg.pooled_dim, list(h["layers"]), h["emb_dim"], h["hidden"], h["dropout"])
        load_weights(self.head, bundle["head"], "anomaly-head weights")
        self.head.to(self.device).eval()
        if self.legacy:
            trained_with = ScoreConfig(score=bundle.get("score", "cosine"), knn_k=int(bundle.get("knn_k", 1)))
            z, domains, groups = _legacy_training_embeddings(bundle)
        else:
            trained_with = ScoreConfig.of(bundle["score_config"])
            z = bundle["train_embeddings"].float()
            domains, groups = list(bundle["train_domains"]), list(bundle["train_machines"])
        if isinstance(score, dict):
            score = ScoreConfig.of({**trained_with.to_dict(), **score})
        self.score_cfg = score or trained_with
        self.score_label = self.score_cfg.label
        if self.score_cfg.embedding == "patch_stats":
            if "train_patch_stats" not in bundle:
                raise ValueError("this checkpoint (an earlier version) stores no training patch statistics: "
                                 "re-run finetune/final-train to score with --embedding patch_stats")
            z = bundle["train_patch_stats"].float()
        self.scorer = EmbeddingScorer(self.score_cfg, bundle["center"].float(),
                                      seed=int(bundle.get("score_seed", 0))).fit(z, domains, groups)

    @property
    def notes(self) -> list[str]:
        """What the loaded score does other than its settings say (e.g. a knn_k above a bank's size)."""
        scorers = list(self.scorers.values()) if self.model_kind == "stats" else [getattr(self, "scorer", None)]
        return list(dict.fromkeys(n for sc in scorers if sc is not None for n in sc.notes))

    def training_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, machines) of the training clips, leave-one-out for the k-NN banks: what thresholds and
        ensemble standardisation are fitted on (never a test clip)."""
        if self.model_kind == "ae":
            if "ae_train_scores" not in self.bundle:
                raise ValueError("this AE checkpoint of an earlier version has no training-clip scores")
            return (np.asarray(self.bundle["ae_train_scores"][self.score_method], dtype=float),
                    np.asarray(self.bundle["ae_train_machines"]))
        if self.model_kind == "stats":
            parts = [scorer.training_scores()[:2] for scorer in self.scorers.values()]
            return (np.concatenate([s.numpy().astype(float) for s, _ in parts]),
                    np.concatenate([np.asarray(g) for _, g in parts]))
        s, g, _ = self.scorer.training_scores()
        return s.numpy().astype(float), np.asarray(g)

    def _fit_thresholds(self) -> dict[str, float]:
        """Per machine: the gamma fit of the training clips' scores (leave-one-out for the k-NN banks)."""
        scores, groups = self.training_scores()
        out = {}
        for m in sorted(set(groups)):
            values = scores[(groups == m) & np.isfinite(scores)]
            if len(values) >= 2 and np.ptp(values) > 0:
                out[str(m)] = float(fit_gamma_threshold(values, self.threshold_percentile))
            elif len(values):
                # no spread to fit a gamma to (e.g. two training clips under density normalisation both
                # score exactly 1): a clip scoring above every training clip is anomalous
                out[str(m)] = float(values.max())
        return out

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", score=None) -> "AnomalyModel":
        bundle = load_checkpoint(path)
        if bundle.get("kind") != MODEL_KIND:
            raise CheckpointError(f"{path}: not a model written by finetune, baseline or final-train "
                                  f"(kind {bundle.get('kind')!r})")
        try:
            return cls(bundle, device, score)
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            what = f"missing {err}" if isinstance(err, KeyError) else _short(err)
            raise CheckpointError(f"{path}: a damaged or foreign model checkpoint ({what})") from None
        except ValueError as err:  # a recorded config that is not valid, or a --score the model cannot use
            raise CheckpointError(f"{path}: {_short(err)}") from None

    @torch.no_grad()
    def embed(self, features: np.ndarray, batch_size: int = 64, embedding: str | None = None) -> torch.Tensor:
        """(N, n_mels, T) log-mel → (N, E) embeddings of an encoder + head model: the head's, or the
        tokenizer's patch statistics (``embedding``; default: what the model's score compares)."""
        embedding = embedding or self.score_cfg.embedding
        out = []
        for i in range(0, len(features), batch_size):
            x = torch.from_numpy(np.asarray(features[i : i + batch_size], dtype=np.float32)).to(self.device)
            x = x[..., : self.encoder_cfg.n_frames]  # the tileable frame count the encoder was built for
            if embedding == "patch_stats":
                out.append(self.encoder.patch_statistics(x).float().cpu())
                continue
            o = self.encoder(x.unsqueeze(1))
            out.append(self.head(o.pooled, o.layers).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.bundle["head_config"]["emb_dim"])

    @torch.no_grad()
    def score_features(self, features: np.ndarray, machines=None, batch_size: int = 64) -> np.ndarray:
        """(N, n_mels, T) log-mel (float16/32) → (N,) anomaly scores, higher = more anomalous.

        ``machines`` names each clip's machine (one name for all, or one per clip); needed when the model
        covers several machines, because each machine has its own banks. Clips are scored one by one:
        no statistic of the scored set reaches any score.
        """
        if self.model_kind == "ae":
            out = []
            for i in range(0, len(features), batch_size):
                x = torch.from_numpy(np.asarray(features[i : i + batch_size], dtype=np.float32)).to(self.device)
                err = reconstruction_errors(self.ae, x).cpu()
                out.append(autoencoder_scores(err, self.score_method, self.mahalanobis))
            return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
        if self.model_kind == "stats":
            return self._stats_scores(features, machines, batch_size)
        if self.legacy and self.scorer.groups.keys() == {"all"}:
            machines = None
        return self.scorer.score(self.embed(features, batch_size), machines).numpy()

    def _stats_scores(self, features: np.ndarray, machines, batch_size: int) -> np.ndarray:
        names = np.asarray([machines] * len(features) if machines is None or isinstance(machines, str)
                           else machines, dtype=object)
        if machines is None:
            if len(self.scorers) > 1:
                raise ValueError(f"the model covers several machines ({', '.join(self.scorers)}): name each clip's machine")
            names[:] = next(iter(self.scorers))
        unknown = sorted(set(names) - set(self.scorers))
        if unknown:
            raise ValueError(f"no statistics for machine(s) {', '.join(map(str, unknown))}; the model has "
                             f"{', '.join(self.scorers)}")
        out = np.zeros(len(features), dtype=np.float32)
        for m in sorted(set(names)):
            rows = np.flatnonzero(names == m)
            st = self.stats[m]
            z = stats_embeddings(np.asarray(features)[rows], st["pooling"], float(st["twfr_r"]), batch_size)
            out[rows] = self.scorers[m].score(z, m).numpy()
        return out

    # ---- recordings of any length ---------------------------------------------------------
    def score_files(self, paths: list[str | Path], machine: str | None = None, channel: int | str = 0,
                    on_bad_file: str = "fail") -> tuple[list[ScoredFile], list[tuple[str, str]]]:
        """Score WAV files of any length: cut into windows of the training clip length (hop = half a
        window; a shorter file is repeated up to one window), score each window, average."""
        audio = AudioConfig(**{**self.feature_cfg.audio.to_dict(), "channel": channel})
        extractor = LogMelExtractor(self.feature_cfg)
        win = audio.num_samples
        hop = max(1, win // 2)
        if machine is None and len(self.machines) == 1:
            machine = self.machines[0]
        if machine is not None and machine not in self.machines:
            raise ValueError(f"--machine {machine}: the model was trained on {', '.join(self.machines)}")
        if machine is None and self.model_kind != "ae":
            raise ValueError(f"the model covers several machines ({', '.join(self.machines)}): give --machine")
        thr = self.thresholds.get(machine) if machine else None
        results, skipped = [], []
        for p in paths:
            try:
                wave = load_any_length(p, audio)
            except BadAudioError as err:
                if on_bad_file == "fail":
                    raise
                skipped.append((str(p), err.reason))
                continue
            if len(wave) < win:
                wave = fit_length(wave, win, audio.pad_mode)
            starts = list(range(0, len(wave) - win + 1, hop))
            if starts[-1] + win < len(wave):  # cover the tail too
                starts.append(len(wave) - win)
            windows = torch.from_numpy(np.stack([wave[s : s + win] for s in starts]))
            with torch.no_grad():
                feats = extractor(windows).numpy()
            s = self.score_features(feats, machine)
            mean = float(np.mean(s))
            results.append(ScoredFile(str(p), mean, float(np.max(s)), len(starts),
                                      None if thr is None else int(mean > thr)))
        return results, skipped
