"""`python -m qmoe classify` on many files in one process, its --csv, the held-out scores it shows, and the light
path a fresh process takes (no torch, no timm, no scipy.signal: they cost seconds of imports)."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from qmoe.__main__ import main
from qmoe.app.inference import classify, model_info, model_scores, shipped_models
from qmoe.core import paths
from tests.conftest import ROOT

FP32 = "esc50 / major / FP32-Base"
CLIPS = ["4-182395-A-0.flac", "4-160999-A-10.flac"]
COLUMNS = ["file", "label", "confidence", "model", "windows", "error"]


@pytest.fixture(scope="module")
def examples():
    return [paths.EXAMPLES_DIR / c for c in CLIPS]


def _csv_rows(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def test_many_files_and_a_folder_one_process_csv_rows_and_a_bad_file_does_not_stop_the_others(
        examples, tmp_path, capsys):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(examples[0], folder / "sub" / examples[0].name)
    (folder / "notes.txt").write_text("not audio, and not an audio suffix: skipped")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(64))
    out = tmp_path / "out.csv"

    code = main(["classify", str(examples[1]), str(bad), str(folder), "--csv", str(out)])
    assert code == 2  # one file failed: said so in the exit code, after the others were classified
    rows = _csv_rows(out.read_text())
    assert [r["file"] for r in rows] == [str(examples[1]), str(bad), str(folder / "sub" / examples[0].name)]
    good = [r for r in rows if r["file"] != str(bad)]
    for r, clip in zip(good, [examples[1], examples[0]]):
        p = classify(clip, shipped_models()[FP32])
        assert (r["label"], r["windows"], r["error"], r["model"]) == (p.label, "1", "", FP32)
        assert float(r["confidence"]) == pytest.approx(p.probs.max(), abs=1e-4)
    (b,) = [r for r in rows if r["file"] == str(bad)]
    assert b["label"] == "" and b["error"], b
    captured = capsys.readouterr()
    assert f"{examples[1]}: " in captured.out and "held-out macro-F1" in captured.out
    assert f"{bad}: error: " in captured.err


def test_csv_to_stdout_is_csv_only(examples, capsys):
    assert main(["classify", *map(str, examples), "--csv", "-"]) == 0
    captured = capsys.readouterr()
    rows = _csv_rows(captured.out)
    assert [r["file"] for r in rows] == list(map(str, examples)) and all(r["label"] for r in rows)
    assert "held-out macro-F1" in captured.err  # the model's scores still shown, on stderr


def test_single_file_output_keeps_its_timeline(examples, tmp_path, capsys):
    import soundfile as sf

    y, sr = sf.read(examples[0], dtype="float32")
    long = tmp_path / "three-times.wav"
    sf.write(long, np.concatenate([y, y, y]), sr)
    assert main(["classify", str(long)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"{long}: ") and "[" in lines[1]
    timeline = [l for l in lines[2:] if l.startswith("  ") and " s  " in l]
    assert len(timeline) == 5  # 15 s: 5 s windows every 2.5 s


def test_unknown_model_is_an_error_before_any_file(capsys):
    assert main(["classify", "whatever.wav", "--model", "no such model"]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_held_out_scores_are_the_cached_runs_of_the_models_own_config():
    from qmoe.core.cache import config_key
    from qmoe.experiments.results import results_frame

    df = results_frame()
    for name, path in shipped_models().items():
        meta, s = model_info(str(path)), model_scores(str(path))
        own = df[df["key"] == meta["key"]]
        assert len(own) == 1, name  # the run that trained this very model (fold 4 held out)
        h = s["held_out"]
        assert (h["fold"], s["protocol"], s["seed"]) == (4, "predefined", 0)
        assert h["f1_macro"] == pytest.approx(own["f1_macro"].iloc[0]) and h["accuracy"] == own["accuracy"].iloc[0]
        same = df[df["key"].isin([config_key({**meta["config"], "fold": f}) for f in range(1, 6)])]
        assert sorted(same["fold"]) == s["cross_validation"]["folds"] == [1, 2, 3, 4, 5]
        assert set(same["variant"]) == {meta["variant"]} and set(same["task"]) == {meta["config"]["task"]}
        assert s["cross_validation"]["f1_mean"] == pytest.approx(same["f1_macro"].mean())
        assert s["cross_validation"]["f1_std"] == pytest.approx(same["f1_macro"].std())


def test_a_fresh_process_classifies_without_torch(examples):
    """Once the ONNX exports are cached (the first classify makes them), the CLI imports no torch, timm, scipy.signal
    or numba, and answers as the in-process engine does."""
    from qmoe.app.inference import deployment_graphs
    from qmoe.audio.backbones import get_backbone

    path = shipped_models()[FP32]
    deployment_graphs(str(path))
    get_backbone(model_info(str(path))["config"]["backbone"], "onnxruntime")
    code = ("import sys, json; from qmoe.__main__ import main; code = main(['classify', sys.argv[1]]); "
            "print(json.dumps({'code': code, 'heavy': [m for m in ('torch', 'timm', 'scipy.signal', 'numba', 'pandas', "
            "'plotly') if m in sys.modules]}))")
    run = subprocess.run([sys.executable, "-c", code, str(examples[0])], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, report
    assert f"{examples[0]}: {classify(examples[0], path).label}  [" in run.stdout
