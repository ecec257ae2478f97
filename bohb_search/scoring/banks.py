"""Domain-aware anomaly scores of embeddings: memory banks of training embeddings, one per domain and machine.

A test clip of machine m is compared with m's training normals of each domain separately and keeps
the smaller score — "normal if it looks like the normals of *either* domain" — so the ~10 target clips
of a first-shot machine are never crowded out by ~1000 source clips (DCASE practice since 2022;
Wilkinghoff's ssl4asd, the DCASE ASD toolkit). Every statistic comes from the training clips:

* **source bank**: every source training embedding, or ``n_centres`` k-means centres of them (renormalised
  to unit length, so a distance to a centre is a cosine distance);
* **target bank**: the target training embeddings, optionally enlarged (``target_augment``) by points on
  the segment between a target embedding and one of its two nearest target neighbours (``interpolate``,
  SMOTE-like) or between a target embedding and one of its five nearest source embeddings, weighted at
  least half towards the target (``mix``);
* **local density normalisation** (``density_k``; Wilkinghoff et al., "Local density-based anomaly score
  normalization for domain generalization", TASLP 2025): a distance to bank point j is divided by ρ_j, the
  mean distance of j to its K nearest *other* points of the machine's banks, so a sparse target bank and a
  dense source bank give scores on one scale;
* **per-bank standardisation** (``standardise``): each bank's scores are standardised by the mean and std of
  the training clips' *leave-one-out* scores against their own domain's bank. (The published version of
  this standardises with test-set statistics; here nothing about the test clips is ever used.)

Distances are ``1 − cos`` between head embeddings. The tokenizer's patch statistics (``embedding
patch_stats``) are instead standardised per machine with the mean and std of its training clips and compared
by Euclidean distance: their norm says how far a clip is from the machine's usual sound, which a cosine
would discard (measured: 0.57 vs 0.73 official score on the detection benchmark, one seed). The k-NN score
of a bank is the mean of its k smallest (normalised) distances.
A clip is scored alone: no statistic over the scored clips exists anywhere in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ScoreConfig
from .scores import DIRECTION_EPS, cosine_anomaly_score

DOMAINS = ("source", "target")
AUGMENT_NEIGHBOURS = 2  # interpolate: partner among a target point's nearest target neighbours (SMOTE default)
MIX_NEIGHBOURS = 5  # mix: partner among a target point's nearest source embeddings
MIX_TARGET_WEIGHT = (0.5, 1.0)  # mix: weight of the target embedding, uniform in this range
STATS_STD_FLOOR = 1e-6  # patch statistics: a dimension whose training std is below this is not rescaled
DENSITY_FLOOR = 0.05  # ρ is at least this share of the group's median ρ (duplicates would give ρ = 0)


def unit(z: Tensor) -> Tensor:
    return F.normalize(z.float(), dim=1, eps=DIRECTION_EPS)


def domain_names(domains) -> np.ndarray:
    """0/1 or "source"/"target" per clip → "source"/"target"."""
    d = np.asarray(domains)
    if d.dtype.kind in "iub":
        return np.where(d.astype(int) == 1, "target", "source")
    return np.char.lower(d.astype(str))


def kmeans_centres(z: Tensor, n: int, seed: int, renormalise: bool = True) -> Tensor:
    """``n`` k-means centres of ``z`` (sklearn, seeded); of unit vectors, renormalised to unit length."""
    from sklearn.cluster import KMeans

    n = min(n, len(z))
    if n >= len(z):
        return z.clone()
    km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(z.double().numpy())
    centres = torch.from_numpy(km.cluster_centers_).float()
    return unit(centres) if renormalise else centres


def pairwise_distances(a: Tensor, b: Tensor, euclidean: bool) -> Tensor:
    """(Na, Nb) distances: Euclidean, or 1 − cos of vectors the caller has made unit length."""
    return torch.cdist(a.float(), b.float()) if euclidean else 1.0 - a @ b.T


@dataclass
class Bank:
    """Reference points of one domain of one machine (unit length, or standardised patch statistics with
    ``euclidean``); ``owners`` (N, 2) names the training clips each point was made from (-1 = none: a
    k-means centre, or the second owner of a real clip)."""

    points: Tensor
    owners: Tensor
    density: Tensor | None = None  # ρ per point, when density normalisation is on
    mean: float = 0.0  # standardisation: mean and std of the leave-one-out training scores
    std: float = 1.0
    euclidean: bool = False

    def distances(self, z: Tensor) -> Tensor:
        d = pairwise_distances(z.float() if self.euclidean else unit(z), self.points, self.euclidean)  # (B, N)
        return d / self.density if self.density is not None else d


def _augment_target(target: Tensor, target_ids: Tensor, source: Tensor, source_ids: Tensor, cfg: ScoreConfig,
                    n_new: int, gen: torch.Generator, euclidean: bool = False) -> tuple[Tensor, Tensor]:
    """Synthetic target points and their owners (two training clips each)."""
    finish = (lambda v: v) if euclidean else unit
    a = torch.randint(0, len(target), (n_new,), generator=gen)
    if cfg.target_augment == "interpolate":
        d = pairwise_distances(target, target, euclidean)
        d.fill_diagonal_(float("inf"))
        near = torch.topk(d, min(AUGMENT_NEIGHBOURS, len(target) - 1), dim=1, largest=False).indices
        b = near[a, torch.randint(0, near.shape[1], (n_new,), generator=gen)]
        lam = torch.rand(n_new, 1, generator=gen)
        points = finish(target[a] + lam * (target[b] - target[a]))
        return points, torch.stack([target_ids[a], target_ids[b]], dim=1)
    d = pairwise_distances(target, source, euclidean)
    near = torch.topk(d, min(MIX_NEIGHBOURS, len(source)), dim=1, largest=False).indices
    s = near[a, torch.randint(0, near.shape[1], (n_new,), generator=gen)]
    lo, hi = MIX_TARGET_WEIGHT
    lam = lo + (hi - lo) * torch.rand(n_new, 1, generator=gen)
    points = finish(lam * target[a] + (1.0 - lam) * source[s])
    return points, torch.stack([target_ids[a], source_ids[s]], dim=1)


@dataclass
class _Group:
    banks: dict[str, Bank] = field(default_factory=dict)
    clip_ids: Tensor | None = None  # training clips of this group (indices into the fitted embeddings)
    clip_domains: list[str] = field(default_factory=list)
    shift: Tensor | None = None  # patch statistics: per-dimension mean and std of the group's training clips
    scale: Tensor | None = None

    def standardised(self, z: Tensor) -> Tensor:
        return z if self.shift is None else (z - self.shift) / self.scale


class EmbeddingScorer:
    """The anomaly score of embeddings named by a :class:`ScoreConfig`, fitted on training embeddings only.

    ``fit(z, domains, groups)`` takes the training clips' embeddings, their domains ("source"/"target"
    or 0/1) and groups (machine names); ``score(z, groups)`` scores clips one by one;
    ``training_scores()`` gives every training clip's leave-one-out score (for decision thresholds).
    """

    def __init__(self, cfg: ScoreConfig, center: Tensor | None = None, seed: int = 0, euclidean: bool | None = None):
        self.cfg = cfg
        self.center = None if center is None else center.float().cpu()
        self.seed = seed
        self.groups: dict[str, _Group] = {}
        self._train: Tensor | None = None
        self.small_banks: list[tuple[str, str, int]] = []  # (group, domain, points) of banks smaller than knn_k
        # statistics (the tokenizer's patch statistics, the yardstick's band statistics) are compared by
        # Euclidean distance after per-group standardisation; the head's embeddings by cosine
        self.euclidean = cfg.embedding == "patch_stats" if euclidean is None else euclidean

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, z: Tensor, domains, groups) -> "EmbeddingScorer":
        if self.cfg.score == "cosine":
            if self.center is None:
                raise ValueError("cosine score: the model has no centre")
        z = torch.as_tensor(z).float()
        z = z.clone() if self.euclidean else unit(z)
        doms = domain_names(domains)
        grp = np.asarray(groups).astype(str)
        if not (len(z) == len(doms) == len(grp)):
            raise ValueError(f"embeddings ({len(z)}), domains ({len(doms)}) and groups ({len(grp)}) differ in length")
        gen = torch.Generator().manual_seed(self.seed)
        for g in sorted(set(grp)):
            ids = torch.from_numpy(np.flatnonzero(grp == g))
            group = _Group(clip_ids=ids, clip_domains=list(doms[ids.numpy()]))
            if self.euclidean:  # training-clip statistics only; a constant dimension keeps scale 1
                group.shift = z[ids].mean(dim=0)
                sd = z[ids].std(dim=0, unbiased=False) if len(ids) > 1 else torch.ones(z.shape[1])
                group.scale = torch.where(sd > STATS_STD_FLOOR, sd, torch.ones_like(sd))
                z[ids] = group.standardised(z[ids])
            if self.cfg.score == "knn":
                group.banks = self._fit_banks(z, ids, doms[ids.numpy()], gen)
                self.small_banks += [(g, d, len(b.points)) for d, b in group.banks.items()
                                     if len(b.points) < self.cfg.knn_k]
            self.groups[g] = group
        self._train = z
        return self

    def _fit_banks(self, z: Tensor, ids: Tensor, doms: np.ndarray, gen: torch.Generator) -> dict[str, Bank]:
        cfg = self.cfg
        by_domain = {d: ids[torch.from_numpy(doms == d)] for d in DOMAINS if (doms == d).any()}
        banks: dict[str, Bank] = {}
        for d, d_ids in by_domain.items():
            pts = z[d_ids]
            owners = torch.stack([d_ids, torch.full_like(d_ids, -1)], dim=1)
            if d == "source" and cfg.source_bank == "kmeans" and cfg.n_centres < len(pts):
                pts = kmeans_centres(pts, cfg.n_centres, self.seed, renormalise=not self.euclidean)
                owners = torch.full((len(pts), 2), -1, dtype=torch.long)
            banks[d] = Bank(pts, owners, euclidean=self.euclidean)
        if cfg.target_augment != "none" and "target" in banks and "source" in by_domain:
            t_ids, s_ids = by_domain["target"], by_domain["source"]
            n_new = int(round(cfg.augment_ratio * len(s_ids))) - len(t_ids)
            if n_new > 0 and (cfg.target_augment == "mix" or len(t_ids) >= 2):
                pts, own = _augment_target(z[t_ids], t_ids, z[s_ids], s_ids, cfg, n_new, gen, self.euclidean)
                bank = banks["target"]
                banks["target"] = Bank(torch.cat([bank.points, pts]), torch.cat([bank.owners, own]),
                                       euclidean=self.euclidean)
        if cfg.density_k:
            self._fit_density(banks)
        if cfg.standardise:
            for d, bank in banks.items():
                own = self._loo_bank_scores(bank, z[by_domain[d]], by_domain[d])
                if len(own) >= 2:
                    bank.mean = float(own.mean())
                    bank.std = float(max(own.std(), 1e-6))
        return banks

    def _fit_density(self, banks: dict[str, Bank]) -> None:
        """ρ_j: mean distance of bank point j to its density_k nearest other points of the machine's banks,
        leaving out points made from the same training clip."""
        pts = torch.cat([b.points for b in banks.values()])
        owners = torch.cat([b.owners for b in banks.values()])
        d = pairwise_distances(pts, pts, self.euclidean)
        d[_shares_owner(owners, owners)] = float("inf")
        d.fill_diagonal_(float("inf"))
        k = min(self.cfg.density_k, max(1, len(pts) - 1))
        near = torch.topk(d, k, dim=1, largest=False).values
        rho = torch.where(torch.isfinite(near), near, torch.nan).nanmean(dim=1)
        rho = torch.nan_to_num(rho, nan=float(torch.nanmedian(rho)) if torch.isfinite(rho).any() else 1.0)
        rho = rho.clamp_min(max(1e-6, DENSITY_FLOOR * float(rho.median())))
        start = 0
        for bank in banks.values():
            bank.density = rho[start : start + len(bank.points)]
            start += len(bank.points)

    @property
    def notes(self) -> list[str]:
        """What the fitted score does other than its settings say: a knn_k larger than a bank averages all of
        the bank's points (one line for all such banks)."""
        if not self.small_banks:
            return []
        banks = ", ".join(f"{g} {d}: {n}" for g, d, n in self.small_banks[:6])
        more = f" and {len(self.small_banks) - 6} more" if len(self.small_banks) > 6 else ""
        return [f"knn_k {self.cfg.knn_k} is more than {len(self.small_banks)} memory bank(s) hold ({banks}{more} "
                f"points): those banks average all their points instead"]

    # ---- scoring -----------------------------------------------------------------------------
    def _bank_scores(self, bank: Bank, z: Tensor, exclude: Tensor | None = None) -> Tensor:
        """k-NN score of every row of ``z`` against ``bank``; ``exclude`` (B,) training clip ids whose own
        points are left out (leave-one-out)."""
        d = bank.distances(z)
        if exclude is not None:
            d = d.masked_fill(_shares_owner(torch.stack([exclude, torch.full_like(exclude, -1)], 1), bank.owners),
                              float("inf"))
        k = min(self.cfg.knn_k, bank.points.shape[0])
        near = torch.topk(d, k, dim=1, largest=False).values
        return torch.where(torch.isfinite(near), near, torch.nan).nanmean(dim=1)

    def _loo_bank_scores(self, bank: Bank, z: Tensor, ids: Tensor) -> Tensor:
        scores = self._bank_scores(bank, z, ids)
        return scores[torch.isfinite(scores)]

    def _group_scores(self, group: _Group, z: Tensor, exclude: Tensor | None = None) -> Tensor:
        per_bank = []
        for bank in group.banks.values():
            s = self._bank_scores(bank, z, exclude)
            per_bank.append((s - bank.mean) / bank.std)
        out = torch.stack(per_bank, dim=1)
        return torch.where(torch.isnan(out), torch.inf, out).min(dim=1).values

    def score(self, z: Tensor, groups=None) -> Tensor:
        """(B, E) embeddings → (B,) anomaly scores; ``groups`` names each clip's machine (default: the only one)."""
        z = torch.as_tensor(z).float()
        if self.cfg.score == "cosine":
            return cosine_anomaly_score(z, self.center)
        grp = self._groups_of(groups, len(z))
        out = torch.empty(len(z))
        for g in sorted(set(grp)):
            rows = torch.from_numpy(np.flatnonzero(grp == g))
            group = self.groups[g]
            out[rows] = self._group_scores(group, group.standardised(z[rows]))
        return out

    def training_scores(self) -> tuple[Tensor, list[str], np.ndarray]:
        """(scores, groups, domains) of every fitted training clip, each scored leave-one-out."""
        if self._train is None:
            raise ValueError("scorer not fitted")
        n = len(self._train)
        scores = torch.empty(n)
        groups = np.empty(n, dtype=object)
        domains = np.empty(n, dtype=object)
        for g, group in self.groups.items():
            ids = group.clip_ids
            z = self._train[ids]
            if self.cfg.score == "cosine":
                scores[ids] = cosine_anomaly_score(z, self.center)
            else:
                scores[ids] = self._group_scores(group, z, exclude=ids)
            groups[ids.numpy()] = g
            domains[ids.numpy()] = group.clip_domains
        return scores, list(groups), domains

    def _groups_of(self, groups, n: int) -> np.ndarray:
        known = sorted(self.groups)
        if groups is None:
            if len(known) != 1:
                raise ValueError(f"the model scores several machines ({', '.join(known)}): say which machine each "
                                 "clip belongs to")
            return np.full(n, known[0], dtype=object)
        grp = np.asarray(groups).astype(str)
        if grp.ndim == 0:
            grp = np.full(n, str(grp), dtype=object)
        unknown = sorted(set(grp) - set(known))
        if unknown:
            raise ValueError(f"machine {', '.join(unknown)} is not one the model was trained on "
                             f"({', '.join(known)})")
        return grp


def _shares_owner(a: Tensor, b: Tensor) -> Tensor:
    """(Na, Nb) True where a row of ``a`` and a row of ``b`` name a common training clip (ids >= 0)."""
    match = (a[:, None, :, None] == b[None, :, None, :]) & (a[:, None, :, None] >= 0)
    return match.any(dim=(2, 3))
