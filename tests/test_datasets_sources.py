"""Downloading and preparing datasets, against a loopback HTTP server (no internet).

The archives are made here in each dataset's real layout from real audio (shared ESC-50 fold-4 clips).
"""
import hashlib
import io
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from qmoe.core.errors import DataError
from qmoe.datasets.sources import SOURCES, fetch, prepare, verify_layout


def _wav(flac_path) -> bytes:
    data, sr = sf.read(flac_path)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clips(shared_esc50):
    meta = pd.read_csv(shared_esc50 / "meta.csv")
    rows = meta[meta["fold"] == 4].sort_values("name").head(10)
    return [(r["name"], r["target"], r["class_name"], _wav(shared_esc50 / "audio" / f"{r['name']}.flac"))
            for _, r in rows.iterrows()]


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _targz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def esc50_zip(clips):
    """ESC-50-master/{meta/esc50.csv, audio/*.wav} with 6 clips."""
    rows = clips[:6]
    csv = pd.DataFrame({"filename": [f"{n}.wav" for n, *_ in rows], "fold": 4, "target": [t for _, t, *_ in rows],
                        "category": [c for _, _, c, _ in rows], "esc10": False,
                        "src_file": [n.split("-")[1] for n, *_ in rows], "take": [n.split("-")[2] for n, *_ in rows]})
    files = {"ESC-50-master/meta/esc50.csv": csv.to_csv(index=False).encode()}
    files.update({f"ESC-50-master/audio/{n}.wav": w for n, _, _, w in rows})
    return files


@pytest.fixture(scope="module")
def us8k_files(clips):
    """UrbanSound8K/{metadata/UrbanSound8K.csv, audio/fold<k>/<fsID>-<classID>-<occ>-<slice>.wav}, 2 folds."""
    rows = []
    files = {}
    for i, (name, _, _, wav) in enumerate(clips[:8]):
        fs_id, class_id, fold = 1000 + i // 2, i % 3, 1 + (i // 2) % 2  # a recording in one fold
        fname = f"{fs_id}-{class_id}-0-{i}.wav"
        rows.append({"slice_file_name": fname, "fsID": fs_id, "start": 0.0, "end": 4.0, "salience": 1,
                     "fold": fold, "classID": class_id, "class": ["air", "horn", "dog"][class_id]})
        files[f"UrbanSound8K/audio/fold{fold}/{fname}"] = wav
    files["UrbanSound8K/metadata/UrbanSound8K.csv"] = pd.DataFrame(rows).to_csv(index=False).encode()
    return files


class _Server:
    """Serves bytes at paths; honours Range; can drop the connection half-way through a file once."""

    def __init__(self):
        self.files, self.drop_once, self.ranges, self.range_support = {}, set(), [], True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.range_support:
                    server.ranges.append(rng)
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the peer sees a short body
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _source(name, server, data, path, **kw):
    server.files[path] = data
    return replace(SOURCES[name], url=server.url(path), md5=hashlib.md5(data).hexdigest(), **kw)


def test_esc50_download_verifies_unpacks_and_checks_the_layout(server, esc50_zip, tmp_path):
    src = _source("esc50", server, _zip(esc50_zip), "/esc50.zip", counts={4: 6})
    report = fetch("esc50", tmp_path, source=src)
    assert report.ok, report.message()
    assert report.root == tmp_path / "ESC-50-master" and report.found == {4: 6}
    assert len(list((tmp_path / "ESC-50-master" / "audio").glob("*.wav"))) == 6
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / ".unpacked").exists()


def test_checksum_failure_leaves_nothing_behind(server, esc50_zip, tmp_path):
    src = replace(_source("esc50", server, _zip(esc50_zip), "/esc50.zip", counts={4: 6}), md5="0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("esc50", tmp_path, source=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("range_support", [True, False], ids=["resume", "clean-retry"])
def test_interrupted_download_resumes_or_restarts_never_unpacks_half(server, us8k_files, tmp_path, range_support):
    data = _targz(us8k_files)
    src = _source("urbansound8k", server, data, "/us8k.tar.gz", counts={1: 4, 2: 4})
    server.drop_once.add("/us8k.tar.gz")
    server.range_support = range_support
    report = fetch("urbansound8k", tmp_path, source=src)
    assert report.ok, report.message()
    assert (tmp_path / src.archive).read_bytes() == data
    assert not server.drop_once  # the first transfer really was cut
    assert bool(server.ranges) == range_support  # a resume asked only for the missing bytes
    if range_support:
        assert server.ranges[0] != "bytes=0-" and int(server.ranges[0][6:-1]) > 0


def test_a_download_that_keeps_failing_keeps_its_part_file_and_says_so(server, us8k_files, tmp_path):
    from qmoe.datasets.sources import download

    server.files["/big"] = _targz(us8k_files)
    server.drop_once.add("/big")
    server.range_support = False
    with pytest.raises(DataError, match="404"):
        download(server.url("/missing"), tmp_path / "x.tar.gz", retries=0)
    with pytest.raises(DataError, match="resume"):
        download(server.url("/big"), tmp_path / "big.tar.gz", retries=0)
    assert (tmp_path / "big.tar.gz.part").exists() and not (tmp_path / "big.tar.gz").exists()


def test_wrong_layout_is_reported_with_what_is_missing(server, esc50_zip, tmp_path):
    broken = {k: v for k, v in esc50_zip.items() if not k.endswith(list(esc50_zip)[1].rsplit("/", 1)[1])}
    src = _source("esc50", server, _zip(broken), "/broken.zip", counts={4: 6})
    report = fetch("esc50", tmp_path, source=src)
    assert not report.ok and report.found == {4: 5} and len(report.missing) == 1
    assert report.missing[0] in report.message() and "4: 5 clips found, 6 expected" in report.message()
    assert not (tmp_path / "ESC-50-master").exists()  # an incomplete tree is never put in place

    no_meta = {k: v for k, v in esc50_zip.items() if not k.endswith(".csv")}
    report = fetch("esc50", tmp_path / "b", source=_source("esc50", server, _zip(no_meta), "/nometa.zip",
                                                           counts={4: 6}))
    assert not report.ok and "meta/esc50.csv is missing" in report.message()


def test_cli_download_checks_against_the_real_dataset_size(server, esc50_zip, tmp_path, monkeypatch, capsys):
    from qmoe.datasets.cli import main_data

    data = _zip(esc50_zip)
    server.files["/esc50.zip"] = data
    monkeypatch.setenv("QMOE_ESC50_URL", server.url("/esc50.zip"))
    code = main_data(["download", "esc50", "--to", str(tmp_path), "--md5", hashlib.md5(data).hexdigest()])
    err = capsys.readouterr().err
    assert code == 1 and "4: 6 clips found, 400 expected" in err and "1: 0 clips found, 400 expected" in err
    assert main_data(["download", "quinn", "--to", str(tmp_path)]) == 2
    assert "QMOE_QUINN_URL" in capsys.readouterr().err


def test_prepare_from_folder_and_archive_then_load_urbansound8k(us8k_files, tmp_path, monkeypatch):
    import qmoe.datasets.urbansound8k  # noqa: F401  (registers itself; __init__ imports it too)
    from qmoe.datasets import get_dataset

    src = replace(SOURCES["urbansound8k"], counts={1: 4, 2: 4})
    archive = tmp_path / "copy.tar.gz"
    archive.write_bytes(_targz(us8k_files))
    report = prepare("urbansound8k", archive, tmp_path / "a", source=src)
    assert report.ok, report.message()
    report = prepare("urbansound8k", report.root.parent, tmp_path / "b", source=src)  # a folder: checked, linked
    assert report.ok and (tmp_path / "b" / "UrbanSound8K").is_symlink()

    monkeypatch.setenv("QMOE_URBANSOUND8K_DIR", str(tmp_path / "b" / "UrbanSound8K"))
    ds = get_dataset("urbansound8k")
    assert ds.fold_ids("predefined") == [1, 2] and len(ds.X) == 8
    assert ds.embedding_info["recipe"] == "esc50-figure" and ds.task("class").class_names == ("air", "horn", "dog")
    train, test = ds.split("class", "predefined", 1)
    assert not set(ds.groups[train]) & set(ds.groups[test])


def test_quinn_class_folders_prepare_and_missing_classes(clips, tmp_path):
    from qmoe.datasets.sources import QUINN_CLASSES

    files = {f"quinn/{QUINN_CLASSES[i % 5]}/site{i % 7}_{i}.wav": w for i, (_, _, _, w) in enumerate(clips)}
    archive = tmp_path / "quinn.zip"
    archive.write_bytes(_zip(files))
    report = prepare("quinn", archive, tmp_path / "q")
    assert report.ok, report.message()
    assert report.found == {c: 2 for c in QUINN_CLASSES}

    partial = {k: v for k, v in files.items() if "/quiet/" not in k}
    (tmp_path / "p.zip").write_bytes(_zip(partial))
    report = prepare("quinn", tmp_path / "p.zip", tmp_path / "p")
    assert not report.ok and "quiet: 0 clips found" in report.message()
    assert verify_layout(SOURCES["quinn"], tmp_path / "q" / "quinn").ok


def test_esc50_from_its_source_audio_is_a_dataset_with_both_tasks(server, esc50_zip, tmp_path, monkeypatch):
    """`esc50-audio`: the downloaded archive, rendered and embedded like an upload, ESC-50's tasks and folds."""
    from qmoe.datasets import dataset_tasks, get_dataset
    from qmoe.datasets.esc50 import MAJOR_NAMES

    src = _source("esc50", server, _zip(esc50_zip), "/esc50.zip", counts={4: 6})
    report = fetch("esc50", tmp_path, source=src)
    assert report.ok, report.message()
    monkeypatch.setenv("QMOE_ESC50_DIR", str(report.root))
    assert dataset_tasks("esc50-audio") == ("major", "class", "reference-categories")
    monkeypatch.setitem(SOURCES, "esc50", src)  # the 6-clip layout is complete for this test's source
    ds = get_dataset("esc50-audio")
    assert len(ds.X) == 6 and ds.fold_ids("predefined") == [4]
    assert ds.embedding_info["source"] == "ESC-50 audio" and ds.task("major").class_names == MAJOR_NAMES
    esc50 = get_dataset("esc50")  # the same clips as shared figures: the audio path gives (nearly) the same vectors
    rows = esc50.meta.reset_index().set_index("name").loc[ds.meta["name"], "index"].to_numpy()
    np.testing.assert_array_equal(ds.task("class").labels, esc50.task("class").labels[rows])
    np.testing.assert_array_equal(ds.task("major").labels, esc50.task("major").labels[rows])
    assert np.abs(ds.X - esc50.X[rows]).max() < 0.05
