"""Domain-aware anomaly scores (bohb_search.scoring.banks) on small hand-made embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from bohb_search.scoring.banks import EmbeddingScorer, kmeans_centres, unit
from bohb_search.scoring.config import ScoreConfig

R2 = 1.0 / math.sqrt(2.0)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def fit(cfg: ScoreConfig, source, target, center=None, seed=0):
    z = torch.cat([source, target])
    domains = ["source"] * len(source) + ["target"] * len(target)
    return EmbeddingScorer(cfg, center, seed).fit(z, domains, ["m"] * len(z))


def test_plain_knn_hand_computed():
    scorer1 = fit(ScoreConfig(score="knn", knn_k=1), t([[1.0, 0.0], [0.0, 1.0]]), t([[-1.0, 0.0]]))
    scorer2 = fit(ScoreConfig(score="knn", knn_k=2), t([[1.0, 0.0], [0.0, 1.0]]), t([[-1.0, 0.0]]))
    z = t([[2.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    # distances to source / target:
    #   z0: (0, 1) / 2          -> k=1: min(0, 2) = 0;  k=2: min(0.5, 2) = 0.5
    #   z1: (2, 1) / 0          -> k=1: 0;              k=2: min(1.5, 0) = 0 (the target bank has 1 point: all of it)
    #   z2: (0.29, 0.29) / 1.71 -> both k: 1 - 1/sqrt(2)
    assert torch.allclose(scorer1.score(z), t([0.0, 0.0, 1.0 - R2]), atol=1e-6)
    assert torch.allclose(scorer2.score(z), t([0.5, 0.0, 1.0 - R2]), atol=1e-6)


def test_min_over_banks():
    g = torch.Generator().manual_seed(0)
    source, target, z = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(7, 4, generator=g)
    both = fit(ScoreConfig(score="knn", knn_k=2), source, target).score(z)
    only_s = EmbeddingScorer(ScoreConfig(score="knn", knn_k=2)).fit(source, ["source"] * 5, ["m"] * 5).score(z)
    only_t = EmbeddingScorer(ScoreConfig(score="knn", knn_k=2)).fit(target, ["target"] * 3, ["m"] * 3).score(z)
    assert torch.allclose(both, torch.minimum(only_s, only_t), atol=1e-6)


def _clusters(seed=0, fault=0.4):
    """A dense source cluster around e0, a sparse target cluster around e1 (first-shot: 10 clips)."""
    g = torch.Generator().manual_seed(seed)

    def cluster(axis, n, spread):
        c = torch.zeros(8)
        c[axis] = 1.0
        return c + spread * torch.randn(n, 8, generator=g)

    source, target = cluster(0, 200, 0.05), cluster(1, 10, 0.15)
    target_normals = cluster(1, 40, 0.15)
    source_anomalies = cluster(0, 40, 0.05)
    source_anomalies[:, 2] += fault  # a fault: pushed off the source cluster along a third axis
    return source, target, target_normals, source_anomalies


@pytest.mark.parametrize("cfg", [ScoreConfig(score="knn", density_k=1), ScoreConfig(score="knn", standardise=True),
                                 ScoreConfig(score="knn", density_k=1, standardise=True),
                                 ScoreConfig(score="knn", source_bank="kmeans", n_centres=16, density_k=2,
                                             target_augment="interpolate", standardise=True)],
                         ids=lambda c: c.label)
def test_normalised_scores_rank_far_target_normals_below_source_anomalies(cfg):
    source, target, target_normals, source_anomalies = _clusters()
    scorer = fit(cfg, source, target)
    assert scorer.score(target_normals).max() < scorer.score(source_anomalies).min()


def test_without_normalisation_the_sparse_target_bank_scores_its_normals_too_high():
    """The reason for the normalisations: raw distances to 10 spread target clips exceed a source fault's."""
    source, target, target_normals, source_anomalies = _clusters()
    scorer = fit(ScoreConfig(score="knn"), source, target)
    assert scorer.score(target_normals).max() > scorer.score(source_anomalies).min()


def test_training_scores_are_leave_one_out():
    source, target, *_ = _clusters()
    scorer = fit(ScoreConfig(score="knn"), source, target)
    scores, groups, domains = scorer.training_scores()
    assert (scores > 0).all()  # every clip's own point left out: no zero self-distance
    assert groups == ["m"] * 210 and list(domains[-10:]) == ["target"] * 10
    # a clip's LOO score is its nearest OTHER clip's distance
    z = unit(source)
    d = 1 - z @ z.T
    d.fill_diagonal_(float("inf"))
    assert torch.allclose(scores[:200], torch.minimum(d.min(dim=1).values, scores[:200]), atol=1e-6)


def test_standardisation_uses_training_statistics_only():
    source, target, target_normals, _ = _clusters()
    cfg = ScoreConfig(score="knn", standardise=True, density_k=1)
    a, b = fit(cfg, source, target), fit(cfg, source, target)
    # scoring different test sets does not move any statistic: scores of one clip agree
    first = a.score(target_normals)
    b.score(torch.randn(100, 8))
    assert torch.equal(b.score(target_normals), first)
    # each bank's LOO training scores are standardised to mean 0, std 1
    for bank in a.groups["m"].banks.values():
        assert bank.std > 0


def test_a_clip_scores_the_same_alone_or_in_any_batch():
    source, target, target_normals, source_anomalies = _clusters()
    scorer = fit(ScoreConfig(score="knn", knn_k=3, density_k=2, standardise=True, target_augment="mix"), source, target)
    batch = torch.cat([target_normals, source_anomalies])
    together = scorer.score(batch)
    alone = torch.stack([scorer.score(batch[i : i + 1])[0] for i in range(len(batch))])
    shuffled = torch.randperm(len(batch), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(together, alone, atol=1e-6)
    assert torch.allclose(scorer.score(batch[shuffled]), together[shuffled], atol=1e-6)


@pytest.mark.parametrize("augment", ["interpolate", "mix"])
def test_target_augmentation_grows_only_the_target_bank_and_its_points_are_left_out_with_their_parents(augment):
    source, target, *_ = _clusters()
    plain = fit(ScoreConfig(score="knn"), source, target).groups["m"].banks
    grown = fit(ScoreConfig(score="knn", target_augment=augment, augment_ratio=0.2), source, target).groups["m"].banks
    assert torch.equal(plain["source"].points, grown["source"].points)
    assert len(grown["target"].points) == 40  # 0.2 × 200 source clips
    synthetic_owners = grown["target"].owners[10:]
    assert (synthetic_owners[:, 0] >= 200).all()  # every synthetic point has a target parent
    # leave-one-out: a target clip's training score ignores the points made from it
    scorer = fit(ScoreConfig(score="knn", target_augment=augment), source, target)
    scores, _, _ = scorer.training_scores()
    assert (scores[200:] > 1e-6).all()


def test_kmeans_centres_are_unit_vectors():
    source, *_ = _clusters()
    centres = kmeans_centres(unit(source), 16, seed=0)
    assert centres.shape == (16, 8)
    assert torch.allclose(centres.norm(dim=1), torch.ones(16), atol=1e-5)


def test_one_domain_machines_have_one_bank_and_machines_are_scored_against_their_own():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(20, 4, generator=g) + 3, torch.randn(20, 4, generator=g) - 3
    scorer = EmbeddingScorer(ScoreConfig(score="knn")).fit(torch.cat([a, b]), [0] * 40, ["a"] * 20 + ["b"] * 20)
    assert list(scorer.groups["a"].banks) == ["source"]
    probe = a[:1]
    assert scorer.score(probe, "a") < scorer.score(probe, "b")
    with pytest.raises(ValueError, match="machine c is not one the model was trained on \\(a, b\\)"):
        scorer.score(probe, "c")
    with pytest.raises(ValueError, match="several machines"):
        scorer.score(probe)


def test_cosine_score_is_the_paper_score():
    source, target, target_normals, _ = _clusters()
    c = t([1.0] + [0.0] * 7)
    scorer = fit(ScoreConfig(score="cosine"), source, target, center=c)
    expected = 1 - torch.nn.functional.cosine_similarity(target_normals, c[None], dim=1)
    assert torch.allclose(scorer.score(target_normals), expected, atol=1e-6)


@pytest.mark.parametrize("bad, field", [({"score": "euclid"}, "score"), ({"knn_k": 0}, "knn_k"),
                                        ({"source_bank": "some"}, "source_bank"), ({"density_k": -1}, "density_k"),
                                        ({"augment_ratio": 0}, "augment_ratio"), ({"embedding": "tokens"}, "embedding")])
def test_score_config_names_the_bad_field(bad, field):
    with pytest.raises(ValueError, match=field):
        ScoreConfig(**bad)


# ---- patch statistics: Euclidean k-NN after per-machine standardisation on the training clips ---------------

PATCH = dict(score="knn", embedding="patch_stats")


def test_the_cosine_score_always_compares_the_head_embedding():
    assert ScoreConfig(score="cosine", embedding="patch_stats").embedding == "head"
    assert ScoreConfig(score="cosine", embedding="patch_stats").label == "cosine"


def test_patch_statistics_are_standardised_per_machine_then_compared_by_euclidean_distance():
    source = t([[0.0, 10.0], [2.0, 30.0]])  # per-dimension training mean (1, 20), std (1, 10) over all 3 clips
    target = t([[1.0, 20.0]])
    scorer = fit(ScoreConfig(**PATCH), source, target)
    z = t([[4.0, 20.0], [1.0, 40.0]])
    # standardised: source (-1, -1), (1, 1); target (0, 0) (std of 3 values, ddof 0: sqrt(2/3) per unit step)
    sd = torch.tensor([math.sqrt(2 / 3), 10 * math.sqrt(2 / 3)])
    mean = t([1.0, 20.0])
    zs, src, tgt = (z - mean) / sd, (source - mean) / sd, (target - mean) / sd
    expected = torch.minimum(torch.cdist(zs, src).min(1).values, torch.cdist(zs, tgt).min(1).values)
    assert torch.allclose(scorer.score(z), expected, atol=1e-5)
    # the norm counts: a clip twice as far along the same direction scores higher (a cosine would tie them)
    far = scorer.score(t([[7.0, 20.0]]))
    assert far > scorer.score(t([[4.0, 20.0]]))


def test_patch_statistics_of_each_machine_are_standardised_with_its_own_training_clips():
    g = torch.Generator().manual_seed(0)
    quiet, loud = torch.randn(30, 4, generator=g), 100.0 + 50.0 * torch.randn(30, 4, generator=g)
    z = torch.cat([quiet, loud])
    scorer = EmbeddingScorer(ScoreConfig(**PATCH)).fit(z, ["source"] * 60, ["quiet"] * 30 + ["loud"] * 30)
    # the same relative deviation scores alike on both machines
    probe_q, probe_l = quiet.mean(0) + 3 * quiet.std(0), loud.mean(0) + 3 * loud.std(0)
    sq, sl = scorer.score(probe_q[None], ["quiet"]), scorer.score(probe_l[None], ["loud"])
    assert torch.allclose(sq, sl, rtol=0.2)


@pytest.mark.parametrize("cfg", [ScoreConfig(**PATCH, density_k=1, standardise=True),
                                 ScoreConfig(**PATCH, knn_k=3, target_augment="interpolate", standardise=True),
                                 ScoreConfig(**PATCH, source_bank="kmeans", n_centres=16, target_augment="mix",
                                             density_k=2, standardise=True)],
                         ids=lambda c: c.label)
def test_patch_statistics_normalised_scores_rank_far_target_normals_below_source_anomalies(cfg):
    # Euclidean distances in 8 dimensions spread more than cosines of the same clusters: a larger fault (0.6)
    # than the head-embedding test, at which the plain k-NN still ranks some target normals above it
    source, target, target_normals, source_anomalies = _clusters(fault=0.6)
    plain = fit(ScoreConfig(**PATCH), source, target)
    assert plain.score(target_normals).max() > plain.score(source_anomalies).min()
    scorer = fit(cfg, source, target)
    assert scorer.score(target_normals).max() < scorer.score(source_anomalies).min()
    batch = torch.cat([target_normals, source_anomalies])
    alone = torch.stack([scorer.score(batch[i : i + 1])[0] for i in range(len(batch))])
    assert torch.allclose(scorer.score(batch), alone, atol=1e-5)
    scores, _, _ = scorer.training_scores()
    assert (scores[:200] > -math.inf).all() and torch.isfinite(scores).all()
