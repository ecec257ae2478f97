"""Search settings: one home per setting (fine-tuning fields live in ``finetune``), earlier files still read."""

from __future__ import annotations

import dataclasses

import pytest

from bohb_search.tune.settings import SearchError, SearchSettings

BASE = dict(name="fan", data=["/d"], machines=["fan"], pretrained="/p/encoder.pt", space="/s.yaml")


def test_finetune_settings_are_not_repeated_and_trials_get_the_search_budget():
    s = SearchSettings(**BASE, max_epochs=27, finetune={"batch_size": 32, "seed": 3, "lr": 5e-4})
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    assert not names & {"batch_size", "seed", "base_config"}
    cfg = s.base_finetune_config()
    assert (cfg.batch_size, cfg.seed, cfg.lr, cfg.max_epochs) == (32, 3, 5e-4, 27)
    assert s.seed == 3
    assert SearchSettings.from_dict(s.to_dict()) == s


def test_settings_are_immutable():
    s = SearchSettings(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tracking_uri = "sqlite:///x.db"


def test_search_settings_json_of_earlier_versions_still_reads():
    old = {**BASE, "num_samples": 9, "max_epochs": 9, "batch_size": 16, "seed": 2, "device": "cpu",
           "base_config": {"patience": 5, "max_epochs": 9, "batch_size": 16, "seed": 2}}
    s = SearchSettings.from_dict(old)
    assert s.finetune == {"patience": 5, "batch_size": 16, "seed": 2}
    assert s.base_finetune_config().patience == 5 and s.seed == 2


@pytest.mark.parametrize("bad, message", [({"finetune": {"lr": -1}}, "lr"),
                                          ({"finetune": {"colour": 1}}, "colour"),
                                          ({"eta": 1}, "--eta")])
def test_bad_settings_name_the_setting(bad, message):
    with pytest.raises(SearchError, match=message):
        SearchSettings(**{**BASE, **bad})
