"""The record store (records/, committed): every run's record is copied there; a fresh clone (no run
cache) regenerates the reports from it and does not train again what it already holds."""

import json
import shutil

import pytest

import layerdrop.train as train_module
from layerdrop.config import load_config
from layerdrop.records import main as records_main
from layerdrop.report.collect import load_records
from layerdrop.train import train
from layerdrop.utils import runs


def _no_training(*args, **kwargs):
    raise AssertionError("trained, though the stored record held the run")


def test_a_fresh_clone_reuses_the_stored_record_and_trains_only_for_what_it_lacks(smoke_overrides, tmp_path,
                                                                                  _record_store, monkeypatch):
    overrides = [*smoke_overrides, "trainer.max_steps=6", "logger=none", "prune.strategies=[every_other]",
                 "prune.splits=[valid]", "artefact=table2", "role=baseline"]
    cfg = load_config(overrides)
    record = train(cfg)
    run_dir = runs.run_dir(cfg)
    stored = _record_store / "lm" / run_dir.name / "metrics.json"
    assert json.loads(stored.read_text()) == json.loads((run_dir / "metrics.json").read_text())
    assert [r["run_key"] for r in load_records(_record_store, "lm", "table2", "cpu")] == [run_dir.name]

    shutil.rmtree(tmp_path / "runs")  # a fresh clone: the store, no run cache
    real_fit = train_module.fit
    monkeypatch.setattr(train_module, "fit", _no_training)
    again = train(load_config([*overrides[:-2], "artefact=figure4"]))  # another artefact reuses the run
    assert again["eval"] == record["eval"] and not (run_dir / "model.pt").exists()
    assert json.loads(stored.read_text())["artefacts"] == ["table2", "figure4"]  # the new tag is stored

    # an evaluation the record lacks needs the weights: the run trains again
    calls = []
    monkeypatch.setattr(train_module, "fit", lambda *a, **k: calls.append("fit") or real_fit(*a, **k))
    more = train(load_config([*overrides[:-2], "prune.strategies=[every_other,first]"]))
    assert calls == ["fit"] and (run_dir / "model.pt").exists()
    assert {e["strategy"] for e in more["eval"]} == {"none", "every_other", "first"}

    # need_weights: the record is complete, but a later step reads the weights
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    train(load_config([*overrides[:-2], "need_weights=true"]))
    assert calls == ["fit"] and (run_dir / "model.pt").exists()


def test_without_a_store_nothing_is_copied(smoke_overrides, tmp_path, _record_store):
    cfg = load_config([*smoke_overrides, "trainer.max_steps=6", "logger=none", "prune.strategies=[]",
                       "prune.splits=[valid]", "paths.records_dir=null"])
    train(cfg)
    assert (runs.run_dir(cfg) / "metrics.json").exists() and not _record_store.exists()


def test_sync_copies_a_cache_made_without_the_store_once(tmp_path, capsys):
    cache, store = tmp_path / "runs", tmp_path / "store"
    runs.write_json(cache / "mlm" / "abc" / "metrics.json", {"run_key": "abc", "eval": []})
    runs.write_json(cache / "mlm" / "abc" / "context.json", {"shuffled_ppl": 2.0})
    runs.write_json(cache / "mlm" / "abc" / "notes.json", {"not": "a record"})
    records_main(["sync", "--runs-dir", str(cache), "--records-dir", str(store)])
    assert "2 records copied" in capsys.readouterr().out
    assert sorted(p.name for p in (store / "mlm" / "abc").iterdir()) == ["context.json", "metrics.json"]
    records_main(["sync", "--runs-dir", str(cache), "--records-dir", str(store)])
    assert "0 records copied" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a folder"):
        records_main(["sync", "--runs-dir", str(tmp_path / "nothing"), "--records-dir", str(store)])


def test_retag_moves_runs_out_of_an_artefact_in_both_copies_and_checks_every_run_first(tmp_path, capsys):
    cache, store = tmp_path / "runs", tmp_path / "store"
    old = {"run_key": "abc", "artefacts": ["table1", "figure2"], "roles": {"table1": "baseline"}, "eval": [1]}
    for base in (cache, store):
        runs.write_json(base / "mt" / "abc" / "metrics.json", old)
    runs.write_json(store / "mt" / "def" / "metrics.json", {"run_key": "def", "artefacts": ["table2"], "roles": {}})
    args = ["--runs-dir", str(cache), "--records-dir", str(store)]

    # one bad run (serves no table1) and one unknown key: nothing is written
    with pytest.raises(SystemExit, match="'def'.*does not serve 'table1'; it serves table2"):
        records_main(["retag", "abc", "def", "--drop", "table1", *args])
    with pytest.raises(SystemExit, match="'nope': no metrics.json"):
        records_main(["retag", "abc", "nope", "--drop", "table1", *args])
    assert json.loads((cache / "mt" / "abc" / "metrics.json").read_text()) == old

    records_main(["retag", "abc", "--drop", "table1", "--add", "regime_mt", *args])
    assert capsys.readouterr().out.count("left table1 (role baseline), joined regime_mt") == 2
    for base in (cache, store):
        new = json.loads((base / "mt" / "abc" / "metrics.json").read_text())
        assert new["artefacts"] == ["figure2", "regime_mt"] and new["roles"] == {} and new["eval"] == [1]
    with pytest.raises(SystemExit, match="needs run keys and --drop"):
        records_main(["retag", "abc"])
    with pytest.raises(SystemExit, match="sync takes no run keys"):
        records_main(["sync", "abc", *args])
