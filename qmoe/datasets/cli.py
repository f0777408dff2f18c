"""`python -m qmoe data download|prepare|check|esc50-folder`: get the public datasets (qmoe.datasets.sources),
or lay ESC-50 clips out as a folder dataset."""
from __future__ import annotations

import argparse
import sys

from ..core.errors import QmoeError


def _progress():
    last = [-1]

    def report(done: int, total: int | None) -> None:
        mb = done // (1 << 20)
        if mb // 10 != last[0]:
            last[0] = mb // 10
            print(f"\r  {mb} MB" + (f" of {total // (1 << 20)} MB" if total else ""), end="", file=sys.stderr)
    return report


def main_data(argv=None) -> int:
    from .sources import SOURCES, fetch, find_root, get_source, prepare, verify_layout

    p = argparse.ArgumentParser(prog="python -m qmoe data", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    d = sub.add_parser("download", help="download, verify and unpack a dataset (resumable)")
    d.add_argument("name", choices=sorted(SOURCES))
    d.add_argument("--to", help="target folder (default data/datasets/<name>, or QMOE_DATASETS)")
    d.add_argument("--url", help="download from here instead (also QMOE_<NAME>_URL)")
    d.add_argument("--md5", help="expected MD5 of the archive (overrides the published one)")
    r = sub.add_parser("prepare", help="use a copy you already have (folder or archive)")
    r.add_argument("name", choices=sorted(SOURCES))
    r.add_argument("--from", dest="src", required=True, help="the dataset folder or its archive")
    r.add_argument("--to", help="target folder (default data/datasets/<name>)")
    c = sub.add_parser("check", help="check the layout of a dataset folder")
    c.add_argument("name", choices=sorted(SOURCES))
    c.add_argument("folder")
    f = sub.add_parser("esc50-folder", help="lay ESC-50 clips out as a folder dataset (root/<class>/<clip>)")
    f.add_argument("--fold", type=int, default=4, help="which fold's clips (the shared copy has fold 4)")
    f.add_argument("--task", choices=["major", "class"], default="major", help="class folders: 5 categories or 50")
    f.add_argument("--audio", help="folder of ESC-50 .flac clips (default: the shared fold-4 audio)")
    f.add_argument("--to", help="target (default data/folders/esc50-fold<fold>-<task>)")
    f.add_argument("--copy", action="store_true", help="copy the clips instead of linking them")
    a = p.parse_args(argv)
    try:
        if a.action == "esc50-folder":
            from .esc50 import make_class_folders
            from .folder import PREFIX, folders_dir

            root = make_class_folders(a.to, a.fold, a.task, a.audio, a.copy)
            name = root.name if root.parent.resolve() == folders_dir().resolve() else str(root.resolve())
            print(f"{root}: {sum(1 for _ in root.rglob('*.flac'))} clips; use it as dataset {PREFIX}{name}")
            return 0
        if a.action == "download":
            src = get_source(a.name)
            print(f"{a.name}: checksum: {src.md5 or 'none'} ({src.checksum_note})", file=sys.stderr)
            report = fetch(a.name, a.to, url=a.url, md5=a.md5, progress=_progress())
            print(file=sys.stderr)
        elif a.action == "prepare":
            report = prepare(a.name, a.src, a.to)
        else:
            report = verify_layout(get_source(a.name), find_root(a.folder, get_source(a.name)))
    except QmoeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.message(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main_data())
