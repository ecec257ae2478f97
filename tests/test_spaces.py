"""Search-space files: valid ones load into a native ConfigurationSpace; malformed ones are rejected naming file and entry."""

from __future__ import annotations

import pytest

from bohb_search.train.configs import FinetuneConfig
from bohb_search.tune.spaces import SPACES_DIR, SearchSpaceError, default_space_path, load_search_space


@pytest.mark.parametrize("generalized", [False, True])
def test_shipped_spaces_load_and_sample(generalized):
    from ConfigSpace import ConfigurationSpace

    space = load_search_space(default_space_path(generalized), depth=6, seed=0)
    assert isinstance(space.configspace, ConfigurationSpace)
    names = set(space.configspace.keys())
    assert {"lr", "lambda_adv", "delta", "unfreeze_k", "weight_decay", "head_dropout", "poe_ratio"} <= names
    assert space.configspace["unfreeze_k"].upper == 6 and space.configspace["lr"].log
    for sample in space.configspace.sample_configuration(20):
        cfg = space.to_finetune_config(dict(sample))
        assert isinstance(cfg, FinetuneConfig) and 1 <= cfg.unfreeze_k <= 6
        assert cfg.patience == 15  # fixed entry applied
    assert len(space.sha256) == 64


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_gives_valid_configs(path):
    """Every YAML under search_spaces/ (also compare_searchers.yaml) loads and samples valid FinetuneConfigs."""
    space = load_search_space(path, depth=4, seed=3)
    assert {"lr", "lambda_adv", "delta"} <= set(space.configspace.keys())
    for sample in space.configspace.sample_configuration(40):
        cfg = space.to_finetune_config(dict(sample))
        assert 1 <= cfg.unfreeze_k <= 4 and 1e-5 <= cfg.lr <= 3e-3
        # what a trial is scored by depends on what it trains: never the frozen tokenizer's statistics
        assert cfg.score == "cosine" or cfg.embedding == "head" or cfg.train_tokenizer, dict(sample)


def test_condition_is_respected():
    space = load_search_space(SPACES_DIR / "machine_default.yaml", depth=4, seed=1)
    for s in space.configspace.sample_configuration(30):
        d = dict(s)
        assert ("knn_k" in d) == (d["score"] == "knn")
        assert ("train_tokenizer" in d) == (d["objective"] == "margin")  # only the margin objective trains it


CASES = {
    "unknown type": ("lr: {type: gaussian, lower: 0.1, upper: 1}", "hyperparameter 'lr': unknown type 'gaussian'"),
    "lower > upper": ("delta: {type: float, lower: 0.9, upper: 0.1}", "hyperparameter 'delta': lower 0.9 > upper 0.1"),
    "log lower <= 0": ("lr: {type: float, lower: 0.0, upper: 0.1, log: true}", "hyperparameter 'lr': log scale needs lower > 0"),
    "unknown name": ("learning_rate: {type: float, lower: 0.1, upper: 1}", "unknown hyperparameter 'learning_rate'"),
    "missing bound": ("lr: {type: float, lower: 0.1}", "hyperparameter 'lr': missing 'upper'"),
    "int not integer": ("unfreeze_k: {type: int, lower: 1.5, upper: 3}", "hyperparameter 'unfreeze_k': 'lower' must be an integer"),
    "bad choices": ("score: {type: categorical, choices: []}", "hyperparameter 'score': 'choices' must be"),
    "bad condition": ("knn_k: {type: int, lower: 1, upper: 3, condition: {scorer: knn}}", "condition on unknown hyperparameter 'scorer'"),
    "typo key": ("lr: {type: float, lower: 0.1, upper: 1, lgo: true}", "hyperparameter 'lr': unknown key(s) lgo"),
    # every choice and both ends of every range go through the config's own validation at load time
    "choice the config rejects": ("score: {type: categorical, choices: [cosine, euclidean]}",
                                  "hyperparameter 'score': value 'euclidean' is not accepted"),
    "range partly invalid": ("head_dropout: {type: float, lower: 0.0, upper: 1.5}",
                             "hyperparameter 'head_dropout': value 1.5 is not accepted"),
    "above the encoder depth": ("unfreeze_k: {type: int, lower: 1, upper: 9}",
                                "hyperparameter 'unfreeze_k': 9 exceeds the encoder depth 4"),
    "float for an integer": ("batch_size: {type: float, lower: 8, upper: 64}",
                             "hyperparameter 'batch_size': an integer setting cannot be searched as type float"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_files_rejected(case, tmp_path):
    entry, message = CASES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(f"name: bad\nhyperparameters:\n  {entry}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(f, depth=4)
    msg = str(info.value)
    assert msg.startswith(f"{f}: ") and message in msg and "\n" not in msg


def test_file_level_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("hyperparameters: [1, 2")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_search_space(f)
    f.write_text("name: x\n")
    with pytest.raises(SearchSpaceError, match="non-empty 'hyperparameters'"):
        load_search_space(f)
    f.write_text("hyperparameters:\n  lr: {type: float, lower: 0.001, upper: 0.01}\nfixed:\n  delta: 7\n")
    with pytest.raises(SearchSpaceError, match="delta"):
        load_search_space(f)
    with pytest.raises(SearchSpaceError, match="not found"):
        load_search_space(tmp_path / "missing.yaml")
    f.write_text("hyperparameters:\n  lr: {type: float, lower: 0.001, upper: 0.01}\nfixed:\n  delta: high\n")
    with pytest.raises(SearchSpaceError, match="'fixed': finetune delta: expected a finite number, got 'high'"):
        load_search_space(f)
    f.write_text("hyperparameters:\n  unfreeze_k: {type: int, lower: 1, upper: depth}\n")
    with pytest.raises(SearchSpaceError, match="needs the encoder depth"):
        load_search_space(f)
