"""Getting the public datasets: download (resumable), verify, unpack, check the layout.

Written by hand with the standard library: soundata (which has ESC-50 and UrbanSound8K loaders) lacks
Quinn, HTTP Range resume and overridable URLs, and pulls in jams/mir_eval/py7zr; we reuse the MD5
it lists for UrbanSound8K (the one Zenodo publishes).

Safety rules: a download is written to `<archive>.part` and renamed only after its size and checksum
check out, so a half-downloaded archive is never unpacked; an interrupted transfer resumes with an
HTTP Range request (or restarts cleanly when the server ignores ranges); an archive is unpacked into
a temporary folder that is renamed into place only once complete.

Every URL can be overridden with `QMOE_<NAME>_URL` (tests point them at 127.0.0.1).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core import paths
from ..core.errors import ConfigError, DataError

CHUNK = 1 << 20
_US8K_FOLD_COUNTS = {1: 873, 2: 888, 3: 925, 4: 990, 5: 936, 6: 823, 7: 838, 8: 806, 9: 816, 10: 837}
QUINN_CLASSES = ("anthropophony", "biophony", "geophony", "quiet", "interference")


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and what its unpacked tree must hold."""
    name: str
    url: str | None
    archive: str  # file name of the downloaded archive
    md5: str | None  # None: the source publishes no checksum (see checksum_note)
    checksum_note: str
    root: str  # top folder inside the archive
    layout: str  # "metadata" (a CSV lists every clip) or "class-folders"
    metadata: str = ""  # CSV path under root
    audio: str = ""  # audio path template under root, formatted with the CSV's columns
    fold_column: str = "fold"
    counts: dict = field(default_factory=dict)  # expected clips per fold (metadata) or class (class-folders)
    citation: str = ""

    def resolved_url(self) -> str:
        url = os.environ.get(f"QMOE_{self.name.upper()}_URL") or self.url
        if not url:
            raise ConfigError(f"{self.name}: no public download URL is known; set QMOE_{self.name.upper()}_URL "
                              f"or pass --url, or use `python -m qmoe data prepare {self.name} --from <copy>`")
        return url


SOURCES = {
    "esc50": Source(
        "esc50", "https://github.com/karoldvl/ESC-50/archive/master.zip", "ESC-50-master.zip", None,
        "the authors publish no checksum, and GitHub's archive of a branch is not byte-stable "
        "(soundata 1.0.1 lists MD5 7771e4b9d86d0945acce719c7a59305a for one snapshot); the layout check "
        "(2,000 clips, 400 per fold) is the guard",
        "ESC-50-master", "metadata", "meta/esc50.csv", "audio/{filename}", "fold", {k: 400 for k in range(1, 6)},
        "K. J. Piczak, ESC: Dataset for Environmental Sound Classification, ACM MM 2015. CC BY-NC 3.0."),
    "urbansound8k": Source(
        "urbansound8k", "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz?download=1",
        "UrbanSound8K.tar.gz", "9aa69802bbf37fb986f71ec1483a196e",
        "MD5 published by Zenodo (record 1203745), as listed by soundata 1.0.1",
        "UrbanSound8K", "metadata", "metadata/UrbanSound8K.csv", "audio/fold{fold}/{slice_file_name}", "fold",
        dict(_US8K_FOLD_COUNTS),
        "J. Salamon, C. Jacoby, J. P. Bello, A Dataset and Taxonomy for Urban Sound Research, ACM MM 2014. "
        "CC BY-NC 3.0."),
    "quinn": Source(
        "quinn", None, "quinn.zip", None,
        "no public archive URL or checksum is known to this project; the labelled clips of Quinn et al. 2022 "
        "(code: doi 10.5281/zenodo.6038459) must be obtained from the authors",
        "quinn", "class-folders", counts={c: 0 for c in QUINN_CLASSES},
        citation="C. A. Quinn et al., Soundscape classification with convolutional neural networks reveals "
                 "temporal and geographic patterns in ecoacoustic data, Ecological Indicators 138, 2022."),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset source {name!r}; choose from {', '.join(SOURCES)}")
    return SOURCES[name]


def datasets_dir() -> Path:
    """Where downloaded datasets live (QMOE_DATASETS, default data/datasets; keep it out of git)."""
    return Path(os.environ.get("QMOE_DATASETS", paths.DATA_DIR / "datasets"))


# --- download -------------------------------------------------------------------------------------------

def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, retries: int = 5, timeout: float = 60.0,
             progress=None, backoff: float = 1.0) -> Path:
    """Download `url` to `dest` via `dest.part`: resumes after a dropped connection, verifies, then renames.

    `progress(done_bytes, total_bytes_or_None)` is called as data arrives. A checksum mismatch deletes
    the partial file and raises DataError (a wrong file is not retried).
    """
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * attempt)
        try:
            total = _fetch(url, part, timeout, progress)
            break
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError,
                OSError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code not in (408, 429, 500, 502, 503, 504):
                part.unlink(missing_ok=True)
                raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
            last_error = e
    else:
        raise DataError(f"download of {url} failed after {retries + 1} attempts ({last_error}); run the command "
                        f"again to resume from the {part.stat().st_size if part.exists() else 0} bytes kept in {part}")
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} ended at {size} of {total} bytes; the partial file was removed, try again")
    if md5 is not None and (got := md5sum(part)) != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}; the file was removed. "
                        f"The server may serve another version, or the transfer was corrupted: try again")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, timeout: float, progress) -> int | None:
    """Append the rest of `url` to `part` (Range from its current size); returns the full size if known."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch, or a stale part: let the size check decide
            total = e.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return have
            part.unlink(missing_ok=True)
            raise ConnectionError("stale partial download discarded") from None
        raise
    with resp:
        if resp.status == 206 and _range_start(resp) == have:
            mode, done = "ab", have
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total) if total.isdigit() else None
        else:  # the server ignored the range: start over
            mode, done = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as f:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise ConnectionError(f"connection dropped at {done} of {total} bytes")
    return total


def _range_start(resp) -> int | None:
    value = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# --- unpack ---------------------------------------------------------------------------------------------

def unpack(archive: Path, to: Path) -> Path:
    """Unpack a zip or tar(.gz) into `to` atomically (temp folder, then rename); returns `to`."""
    archive, to = Path(archive), Path(to)
    tmp = to.with_name(f".{to.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    _check_member(member, archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise DataError(f"{archive} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} is damaged ({e}); delete it and download again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if to.exists():
        shutil.rmtree(to)
    os.replace(tmp, to)
    return to


def _check_member(member: str, archive: Path) -> None:
    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
        raise DataError(f"{archive} holds an unsafe path {member!r}; refusing to unpack it")


# --- layout ---------------------------------------------------------------------------------------------

@dataclass
class LayoutReport:
    source: str
    root: Path
    found: dict  # fold or class -> clips present
    expected: dict  # fold or class -> clips expected (0: any number)
    missing: list  # files listed in the metadata but absent
    problems: list  # anything else (no metadata, unknown classes...)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems and all(
            self.found.get(k, 0) == n if n else self.found.get(k, 0) > 0 for k, n in self.expected.items())

    def message(self) -> str:
        if self.ok:
            return f"{self.source}: layout OK at {self.root} ({sum(self.found.values())} clips)"
        lines = [f"{self.source}: the layout at {self.root} is incomplete"] + [f"  - {p}" for p in self.problems]
        for k, n in self.expected.items():
            have = self.found.get(k, 0)
            if (n and have != n) or (not n and not have):
                lines.append(f"  - {k}: {have} clips found, {n or 'at least 1'} expected")
        if self.missing:
            lines.append(f"  - {len(self.missing)} listed files are missing, e.g. " + ", ".join(self.missing[:5]))
        return "\n".join(lines)


def find_root(base: Path, source: Source) -> Path:
    """The dataset's top folder: `base` itself or `base/<source.root>` (or one level deeper)."""
    base = Path(base)
    nested = [p / source.root for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    for cand in (base, base / source.root, *nested):
        if source.layout == "metadata" and (cand / source.metadata).exists():
            return cand
        if source.layout == "class-folders" and cand.is_dir() and any((cand / c).is_dir() for c in source.counts):
            return cand
    return base / source.root


def verify_layout(source: Source, root: Path) -> LayoutReport:
    """Compare the tree at `root` with what `source` must hold (every listed file, counts per fold/class)."""
    root = Path(root)
    found, missing, problems = {}, [], []
    if source.layout == "metadata":
        meta_path = root / source.metadata
        if not meta_path.exists():
            problems.append(f"the metadata file {source.metadata} is missing")
        else:
            meta = pd.read_csv(meta_path)
            for row in meta.to_dict("records"):
                rel = source.audio.format(**row)
                if (root / rel).is_file():
                    found[row[source.fold_column]] = found.get(row[source.fold_column], 0) + 1
                else:
                    missing.append(rel)
            extra = set(meta[source.fold_column]) - set(source.counts)
            if extra:
                problems.append(f"unexpected folds in {source.metadata}: {sorted(extra)}")
    else:
        from .folder import AUDIO_SUFFIXES

        for cls in source.counts:
            d = root / cls
            found[cls] = sum(1 for f in d.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES) if d.is_dir() else 0
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in source.counts) \
            if root.is_dir() else []
        if others:
            problems.append(f"unexpected class folders {others}; expected {list(source.counts)}")
    return LayoutReport(source.name, root, found, dict(source.counts), missing, problems)


# --- the two user-facing operations -------------------------------------------------------------------

def fetch(name: str, to: Path | None = None, url: str | None = None, md5: str | None = None,
          source: Source | None = None, progress=None) -> LayoutReport:
    """Download, verify, unpack and check dataset `name` under `to` (default datasets_dir()/name)."""
    source = source or get_source(name)
    to = Path(to or datasets_dir() / source.name)
    archive = download(url or source.resolved_url(), to / source.archive, md5 or source.md5, progress=progress)
    return _unpack_and_verify(source, archive, to)


def prepare(name: str, src: Path, to: Path | None = None, source: Source | None = None) -> LayoutReport:
    """Use a copy the user already has: an archive (verified, unpacked) or a folder (checked, linked)."""
    source = source or get_source(name)
    src = Path(src).expanduser()
    to = Path(to or datasets_dir() / source.name)
    if not src.exists():
        raise DataError(f"{src} does not exist")
    if src.is_file():
        if source.md5 and src.name == source.archive and (got := md5sum(src)) != source.md5:
            raise DataError(f"checksum mismatch for {src}: MD5 {got}, expected {source.md5} "
                            f"({source.checksum_note}); the archive is damaged or another version")
        return _unpack_and_verify(source, src, to)
    root = find_root(src, source)
    report = verify_layout(source, root)
    if report.ok:
        link = to / source.root
        if link.resolve() != root.resolve():
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                raise DataError(f"{link} already exists; remove it or choose another --to")
            link.symlink_to(root.resolve(), target_is_directory=True)
    return report


def _unpack_and_verify(source: Source, archive: Path, to: Path) -> LayoutReport:
    unpacked = unpack(archive, to / ".unpacked")
    root = find_root(unpacked, source)
    report = verify_layout(source, root)
    if report.ok:
        final = to / source.root
        if final.is_symlink():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(root, final)
        shutil.rmtree(unpacked, ignore_errors=True)
        report.root = final
    return report


def dataset_root(name: str) -> Path:
    """The prepared tree of `name` (raises DataError with the command to run when absent)."""
    source = get_source(name)
    root = Path(os.environ.get(f"QMOE_{name.upper()}_DIR", datasets_dir() / name / source.root))
    if not root.exists():
        raise DataError(f"{name} is not prepared at {root}: run `python -m qmoe data download {name}` "
                        f"or `python -m qmoe data prepare {name} --from <folder or archive>`")
    return root
