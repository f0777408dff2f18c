"""The folder dataset end to end on real audio: 40 shared fold-4 ESC-50 clips in class folders."""
import shutil

import numpy as np
import pandas as pd
import pytest

from qmoe.core.errors import DataError

PER_CLASS, N_CLASSES = 10, 4  # the validation split needs ~8 training clips in a class


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, shared_esc50):
    """root/<major category>/<ESC-50 name>.flac, 4 categories x 10 clips (names carry the recording id)."""
    meta = pd.read_csv(shared_esc50 / "meta.csv")
    fold4 = meta[meta["fold"] == 4].sort_values(["major_id", "name"])
    root = tmp_path_factory.mktemp("folder") / "my-sounds"
    for major, rows in list(fold4.groupby("major"))[:N_CLASSES]:
        (root / major).mkdir(parents=True)
        for name in rows["name"].head(PER_CLASS):
            shutil.copy(shared_esc50 / "audio" / f"{name}.flac", root / major / f"{name}.flac")
    return root


def test_recording_ids_follow_the_documented_rules():
    from qmoe.datasets.folder import recording_id

    assert recording_id("4-102844-A-49") == "102844"      # ESC-50
    assert recording_id("100032-3-0-0") == "100032"       # UrbanSound8K
    assert recording_id("site12_2019-04-01_3") == "site12_2019-04-01"
    assert recording_id("dog bark") is None


def test_grouped_folds_keep_a_recording_in_one_fold(clip_folder):
    from qmoe.datasets.folder import assign_folds, scan_folder

    meta = scan_folder(clip_folder)
    assert len(meta) == N_CLASSES * PER_CLASS and meta["class_name"].nunique() == N_CLASSES
    folds, groups, rule = assign_folds(clip_folder, meta)
    assert rule.startswith("grouped") and set(folds) == {1, 2, 3, 4, 5}
    per_group = pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique()
    assert (per_group == 1).all()
    assert per_group.size < len(meta)  # some recordings have several takes: grouping mattered


def test_names_without_recording_ids_get_stratified_folds(tmp_path, clip_folder):
    from qmoe.datasets.folder import assign_folds, scan_folder

    root = tmp_path / "plain"
    for i, f in enumerate(sorted(clip_folder.rglob("*.flac"))):
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f"clip {i}.flac")
    meta = scan_folder(root)
    folds, groups, rule = assign_folds(root, meta)
    assert rule.startswith("stratified")
    counts = pd.crosstab(meta["class_name"], folds)
    assert counts.shape == (N_CLASSES, 5) and (counts >= 1).all().all()


def test_folds_csv_wins_and_must_cover_every_clip(tmp_path, clip_folder):
    from qmoe.datasets.folder import assign_folds, scan_folder

    root = tmp_path / "with-folds"
    shutil.copytree(clip_folder, root)
    meta = scan_folder(root)
    wanted = np.arange(len(meta)) % 3 + 1
    pd.DataFrame({"file": meta["file"], "fold": wanted}).to_csv(root / "folds.csv", index=False)
    folds, _, rule = assign_folds(root, meta)
    assert rule == "folds.csv" and (folds == wanted).all()

    pd.DataFrame({"file": meta["file"][1:], "fold": wanted[1:]}).to_csv(root / "folds.csv", index=False)
    with pytest.raises(DataError, match="no fold for 1 clip"):
        assign_folds(root, meta)


def test_unusable_folders_are_refused_with_the_reason(tmp_path, clip_folder):
    from qmoe.datasets.folder import load_folder, scan_folder

    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")
    one = tmp_path / "one-class"
    shutil.copytree(clip_folder / "animals", one / "animals")
    with pytest.raises(DataError, match="at least 2 classes"):
        scan_folder(one)
    few = tmp_path / "few"
    shutil.copytree(clip_folder, few)
    for f in sorted((few / "animals").iterdir())[2:]:
        f.unlink()
    with pytest.raises(DataError, match=r"animals \(2\)"):
        load_folder(few)
    broken = tmp_path / "broken"
    shutil.copytree(clip_folder, broken)
    (broken / "animals" / "9-999999-A-0.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="9-999999-A-0.wav"):
        load_folder(broken)


def test_folder_dataset_embeds_trains_and_reaches_the_results_table(clip_folder, store):
    from qmoe.app.inference import embed_windows
    from qmoe.audio.decode import load_audio, training_windows
    from qmoe.datasets import get_dataset, register_folder
    from qmoe.datasets.folder import load_prefixed
    from qmoe.experiments.experiment import RunConfig, run
    from qmoe.experiments.results import results_frame

    name = register_folder(clip_folder)
    assert name == f"folder:{clip_folder.resolve()}"
    ds = get_dataset(name)
    assert ds.X.shape == (N_CLASSES * PER_CLASS, ds.dim) and ds.embedding_info["recipe"] == "esc50-figure"
    assert ds.fold_ids("predefined") == [1, 2, 3, 4, 5]
    # the same vector the app computes for an uploaded clip (one shared cache entry)
    windows, _ = training_windows(load_audio(clip_folder / ds.meta["file"].iloc[0]))
    assert len(windows) == 1  # ESC-50 clips are 5 s: one training window
    np.testing.assert_array_equal(ds.X[0], embed_windows(windows, ds.embedding_info["backbone"])[1][0])
    assert load_prefixed("esc50") is None

    rec = run(RunConfig(name, "class", "predefined", "FP32-Base", 1, 0), store, progress=False)
    assert rec["n_test"] == int((ds.folds == 1).sum()) and rec["class_names"] == sorted(ds.meta["class_name"].unique())
    df = results_frame(store)
    assert list(df["dataset"]) == [name] and 0.0 <= df["f1_macro"].iloc[0] <= 1.0


def test_logmel_recipe_is_recorded_and_gives_other_embeddings(clip_folder):
    from qmoe.datasets.folder import load_folder, load_prefixed

    figure = load_folder(clip_folder)
    logmel = load_prefixed(f"folder:{clip_folder}?recipe=logmel")
    assert logmel.embedding_info["recipe"] == "logmel" and logmel.name.endswith("?recipe=logmel")
    assert logmel.X.shape == figure.X.shape and not np.allclose(logmel.X, figure.X)
    assert list(figure.meta["file"]) == list(logmel.meta["file"])  # the same clips, drawn by two recipes
    assert figure.embedding_info["inputs_sha256"] != logmel.embedding_info["inputs_sha256"]  # 44.1 kHz windows
    assert figure.embedding_info["clip"].startswith("mean of its 5 s") and logmel.embedding_info["clip"] == "the whole clip"


def test_esc50_folder_command_builds_a_named_machine_independent_folder_dataset(tmp_path, monkeypatch, capsys):
    """`python -m qmoe data esc50-folder` lays the shared fold-4 audio out as data/folders/esc50-fold4-major."""
    from qmoe.datasets import dataset_tasks, folder, list_datasets
    from qmoe.datasets.cli import main_data
    from qmoe.datasets.folder import assign_folds, parse_name, scan_folder

    monkeypatch.setattr(folder, "folders_dir", lambda: tmp_path / "folders")
    assert main_data(["esc50-folder"]) == 0
    root = tmp_path / "folders" / "esc50-fold4-major"
    assert "folder:esc50-fold4-major" in capsys.readouterr().out
    meta = scan_folder(root)
    assert len(meta) == 400 and meta["class_name"].value_counts().to_dict() == {c: 80 for c in meta["class_name"].unique()}
    assert sorted(meta["class_name"].unique()) == ["animals", "exterior_urban", "human_non_speech",
                                                    "interior_domestic", "natural_soundscapes"]
    assert "CC BY-NC 3.0" in (root / "ATTRIBUTION.md").read_text()
    # the name is relative to data/folders (the same on every checkout), listed for the app's pickers
    assert parse_name("folder:esc50-fold4-major")[0] == root
    assert "folder:esc50-fold4-major" in list_datasets() and dataset_tasks("folder:esc50-fold4-major") == ("class",)
    folds, groups, rule = assign_folds(root, meta)
    assert rule.startswith("grouped by recording")
    for g in set(groups):  # takes of one source recording never straddle two folds
        assert len(set(folds[groups == g])) == 1

    assert main_data(["esc50-folder", "--fold", "2", "--to", str(tmp_path / "f2")]) == 2  # fold 2 has no audio here
    assert "fold-2 clip" in capsys.readouterr().err and not (tmp_path / "f2").exists()


def test_unusable_datasets_are_refused_before_a_run_starts(tmp_path, clip_folder):
    from qmoe.core.errors import ConfigError, QmoeError
    from qmoe.datasets import dataset_tasks
    from qmoe.experiments import jobs

    with pytest.raises(DataError, match="data download urbansound8k"):
        dataset_tasks("urbansound8k")
    with pytest.raises(DataError, match="does not exist"):
        dataset_tasks(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="unknown dataset"):
        dataset_tasks("esc5O")
    spec = {"dataset": f"folder:{clip_folder}", "tasks": ["major"], "variants": ["FP32-Base"]}
    with pytest.raises(QmoeError, match="has no task major; its tasks: class"):
        jobs.validate(spec)
    assert jobs.validate({**spec, "tasks": ["class"]})["dataset"] == f"folder:{clip_folder}"
