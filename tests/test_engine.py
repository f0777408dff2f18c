"""The engine slice on real ESC-50 embeddings: splits, training, the result cache, the export."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from qmoe.core.errors import ConfigError
from qmoe.experiments import experiment
from qmoe.experiments.experiment import RunConfig, run
from qmoe.experiments.results import results_frame
from tests.conftest import ROOT


def _shared_recordings(ds, protocol):
    shared = set()
    for fold in ds.fold_ids(protocol):
        train, test = ds.split("major", protocol, fold)
        assert len(test) == 400 and len(train) == 1600
        shared |= set(ds.groups[train]) & set(ds.groups[test])
    return shared


def test_predefined_folds_keep_recordings_together_paper_split_does_not(esc50):
    predefined = _shared_recordings(esc50, "predefined")
    paper = _shared_recordings(esc50, "paper")
    assert len(predefined) <= 4  # ESC-50's own folds split 4 source recordings; nothing else crosses
    assert len(paper) > 50 * max(1, len(predefined))  # the shuffled split leaks same-source takes
    for fold in esc50.fold_ids("paper"):
        _, test = esc50.split("major", "paper", fold)
        assert np.bincount(esc50.task("major").labels[test]).tolist() == [80] * 5  # stratified


def test_validation_split_is_carved_from_training_folds(esc50):
    train, test = esc50.split("class", "predefined", 2)
    fit, val = esc50.validation_split("class", train, seed=0)
    assert set(fit) | set(val) == set(train) and not set(val) & set(test)
    assert not set(esc50.groups[fit]) & set(esc50.groups[val])
    assert 0.08 < len(val) / len(train) < 0.2


def test_tasks(esc50):
    assert len(esc50.task("major").class_names) == 5 and len(esc50.task("class").class_names) == 50
    major, target = esc50.task("major").labels, esc50.task("class").labels
    assert (major == target // 10).all()
    ref = esc50.task("reference-categories").labels
    assert np.bincount(ref).tolist() == [400] * 5 and ref[target == 25][0] == ref[target == 0][0]
    with pytest.raises(ConfigError, match="unknown task"):
        esc50.task("genre")


def test_training_beats_chance_and_is_cached(store, monkeypatch):
    cfg = RunConfig("esc50", "major", "predefined", "FP32-Base", fold=1, seed=0)
    rec = run(cfg, store, progress=False)
    assert rec["f1_macro"] > 0.5  # chance is 0.2 on 5 balanced classes
    assert rec["n_test"] == 400 and rec["params"] > 1e6 and rec["model_bytes"] > 4e6
    assert rec["code_version"]["source_sha256"] and rec["config"]["train"]["lr"] == pytest.approx(5.79e-4)

    def no_training(*a, **k):
        raise AssertionError("a cached config was computed again")

    monkeypatch.setattr(experiment, "fit", no_training)
    again = run(cfg, store, progress=False)
    assert again["key"] == rec["key"] and again["f1_macro"] == rec["f1_macro"]
    arrays = store.arrays(rec["key"])
    assert arrays["probs"].shape == (400, 5)
    assert np.isclose(arrays["probs"].astype(np.float64).sum(1), 1, atol=3e-3).all()  # stored as float16


def test_training_is_deterministic(store, tmp_path):
    from qmoe.experiments.store import ResultStore

    cfg = RunConfig("esc50", "major", "predefined", "Q4-Base", fold=3, seed=7)
    a = run(cfg, store, progress=False)
    b = run(cfg, ResultStore(tmp_path / "other"), progress=False)
    assert a["f1_macro"] == b["f1_macro"] and a["best_epoch"] == b["best_epoch"]


def test_corrupt_cache_entry_is_quarantined_and_recomputed(store):
    cfg = RunConfig("esc50", "major", "predefined", "FP32-Base", fold=2, seed=0)
    rec = run(cfg, store, progress=False)
    path = store.runs / f"{rec['key']}.json"
    path.write_text('{"truncated": ')
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.get(rec["key"]) is None
    assert (store.root / "quarantine" / path.name).exists()
    again = run(cfg, store, progress=False)
    assert again["f1_macro"] == rec["f1_macro"]


def test_bad_configs_are_rejected(store):
    with pytest.raises(ConfigError, match="unknown variant"):
        run(RunConfig(variant="Q5-Bass"), store)
    with pytest.raises(ConfigError, match="fold 9"):
        run(RunConfig(fold=9), store, progress=False)
    with pytest.raises(ConfigError, match="unknown protocol"):
        run(RunConfig(protocol="random"), store, progress=False)
    with pytest.raises(ConfigError, match="unknown dataset"):
        run(RunConfig(dataset="imagenet"), store, progress=False)


def test_results_csv_export_has_the_contract_columns(store, tmp_path):
    run(RunConfig(fold=5), store, progress=False)
    out = subprocess.run([sys.executable, "-m", "qmoe", "results", "--csv"], cwd=ROOT, capture_output=True,
                         text=True, env={**__import__("os").environ, "QMOE_RESULTS": str(store.root)}, check=True)
    from io import StringIO

    df = pd.read_csv(StringIO(out.stdout))
    for col in ["dataset", "task", "protocol", "variant", "fold", "f1_macro", "accuracy", "params", "model_bytes"]:
        assert col in df.columns
    assert len(df) == 1 and df.loc[0, "variant"] == "FP32-Base" and df.loc[0, "fold"] == 5
    assert len(results_frame(store)) == 1
