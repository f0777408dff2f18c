"""Command line: `python -m qmoe <command>`; `python -m qmoe -h` lists the commands."""
from __future__ import annotations

import argparse
import sys
import time

from .core.errors import QmoeError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def cmd_embed(a):
    from .datasets import get_dataset
    from .datasets.esc50 import embed_esc50

    if a.dataset == "esc50":
        print(f"wrote {embed_esc50(a.backbone)}")
    else:  # other datasets embed (through the cache) when first loaded
        ds = get_dataset(a.dataset, a.backbone)
        print(f"{ds.name}: {len(ds.X)} items embedded ({ds.embedding_info.get('recipe')})")


def cmd_train(a):
    import pandas as pd

    from .datasets import dataset_tasks
    from .experiments.experiment import run_grid
    from .experiments.results import summary

    known = dataset_tasks(a.dataset)
    tasks = a.task or (["major"] if "major" in known else [known[0]])  # the paper's task where there is one
    if a.executor == "local" and a.address:
        raise QmoeError("--address is the address of a Ray cluster: use it with --executor ray")
    if a.export:  # the trained weights are needed here: this process trains, one fold after another
        if a.executor == "ray":
            raise QmoeError("--export writes the trained weights, which stay on the worker: use --executor local")
        records = run_grid(a.dataset, tasks, a.protocol, a.variant, a.folds, a.seeds, selection=a.selection,
                           backbone=a.backbone, export_to=a.export)
    else:  # every core (or the Ray cluster) works; this process writes the results
        from .experiments.executors import grid_configs, run_configs

        records = run_configs(grid_configs(a.dataset, tasks, a.protocol, a.variant, a.folds, a.seeds,
                                           selection=a.selection, backbone=a.backbone), executor=a.executor,
                              workers=a.workers, address=a.address)
    if a.export:
        print(f"exported {len(records)} ONNX models to {a.export}/ (one per fold: trained on the other folds)")
    df = pd.DataFrame(records)
    cols = ["task", "protocol", "variant", "fold", "seed", "f1_macro", "accuracy", "params", "model_bytes"]
    print(df[cols].to_string(index=False, float_format="%.3f"))
    df["options"] = ""
    print()
    print(summary(df)[["task", "protocol", "variant", "runs", "f1_mean", "f1_std"]].to_string(
        index=False, float_format="%.3f"))


def cmd_export(a):
    """Write a trained model as the ONNX file a device runs (z-scoring inside; classes in its metadata)."""
    from pathlib import Path

    from .app.inference import load_model, shipped_models
    from .deploy.export import export_trained

    path = shipped_models().get(a.model) or a.model
    if not Path(path).with_suffix(".safetensors").exists():
        known = "\n  ".join(shipped_models())
        raise QmoeError(f"no trained model {a.model!r}: give a shipped model name or a checkpoint path; shipped:\n  {known}")
    tm = load_model(str(Path(path).with_suffix(".safetensors")))
    data = export_trained(tm, batch=None if a.any_batch else 1).SerializeToString()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out}: {len(data):,} bytes of ONNX ({tm.variant}; the engine's packed model: "
          f"{int(tm.model.packed().nbytes):,} bytes); input: the backbone embedding "
          f"({'any batch' if a.any_batch else 'one clip per call'}), output: logits of {len(tm.class_names)} classes")


def cmd_results(a):
    from .experiments.results import results_frame, summary

    df = results_frame()
    if a.csv:
        df.to_csv(sys.stdout, index=False)
    elif a.summary:
        print(summary(df).to_string(index=False, float_format="%.3f"))
    else:
        print(df[["dataset", "task", "protocol", "variant", "fold", "seed", "f1_macro", "accuracy", "params",
                  "model_bytes"]].to_string(index=False, float_format="%.3f"))


def cmd_variants(a):
    from .models.registry import get_variant, list_variants

    for name in list_variants():
        s = get_variant(name)
        print(f"{name:28s} {s.family:6s} {s.description}")


def cmd_ship(a):
    """Train the models shipped in data/models (fold 4 held out) through the cached CV run."""
    from .app.inference import SHIP_FOLD, model_file_stem
    from .core import paths
    from .experiments.experiment import RunConfig, run

    for task in a.task or ["major"]:
        for variant in a.variant:
            cfg = RunConfig(a.dataset, task, "predefined", variant, SHIP_FOLD, a.seed)
            path = paths.MODELS_DIR / model_file_stem(a.dataset, task, variant)
            rec = run(cfg, save_model_to=path)
            print(f"{path.name}: fold-{SHIP_FOLD} macro-F1 {rec['f1_macro']:.3f}")


def cmd_classify(a):
    """Classify files and folders in one process: per file its answer (and per-window timeline), a progress bar
    for many, `--csv` one row per file; a file that fails gets its error and the others go on."""
    import csv
    from pathlib import Path

    from .app.inference import audio_files, classify, describe_scores, model_scores, shipped_models

    models = shipped_models()
    path = models.get(a.model) or Path(a.model)
    if not Path(path).exists():
        known = "\n  ".join(models)
        raise QmoeError(f"no trained model {a.model!r}: give a shipped model name or a checkpoint path; shipped:\n  {known}")
    files = audio_files(a.files)
    if not files:
        raise QmoeError(f"no audio files in {' '.join(a.files)}")
    to_stdout = a.csv == "-"
    say = (lambda text: print(text, file=sys.stderr)) if to_stdout else print  # stdout stays pure CSV
    say(f"model {a.model}: {describe_scores(model_scores(str(path)))}")
    rows, failed = [], 0
    from tqdm.auto import tqdm

    bar = tqdm(files, desc="classify", unit="file", disable=len(files) < 2)
    for f in bar:
        try:
            p = classify(f, path)
        except Exception as e:  # one bad file must not stop the others: its error goes in its row
            failed += 1
            msg = str(e) if isinstance(e, QmoeError) else f"unexpected {type(e).__name__}: {e}"
            bar.write(f"{f}: error: {msg}", file=sys.stderr)
            rows.append({"file": str(f), "label": "", "confidence": "", "model": a.model, "windows": "", "error": msg})
            continue
        rows.append({"file": str(f), "label": p.label, "confidence": f"{p.probs.max():.4f}", "model": a.model,
                     "windows": len(p.windows), "error": ""})
        if to_stdout:
            continue
        top = ", ".join(f"{n} {pr:.2f}" for n, pr in p.top(5))
        lines = [f"{f}: {p.label}  [{top}]"]
        if len(p.windows) > 1:  # the timeline: one line per 5 s window (the answer above is their mean)
            lines += [f"  {w['start_s']:5.1f}-{w['end_s']:5.1f} s  {w['label']} {w['probability']:.2f}"
                      for w in p.timeline()]
        bar.write("\n".join(lines))
    bar.close()
    if a.csv:
        out = sys.stdout if to_stdout else open(a.csv, "w", newline="")
        try:
            writer = csv.DictWriter(out, fieldnames=["file", "label", "confidence", "model", "windows", "error"])
            writer.writeheader()
            writer.writerows(rows)
        finally:
            if not to_stdout:
                out.close()
        if not to_stdout:
            print(f"wrote {a.csv}: {len(rows)} rows")
    if failed and len(files) > 1:
        print(f"{failed} of {len(files)} files could not be classified", file=sys.stderr)
    return 2 if failed else 0


def cmd_reproduce(a):
    from .experiments.reproduce import reproduce, status

    if a.list:
        rows, distinct = status(seeds=a.seeds, tasks=a.task)
        for name, n, cached in rows:
            print(f"{n:5d} runs  {cached:5d} cached  {name}")
        print(f"{distinct:5d} distinct runs in all (stages share some)")
        return
    import json
    import os
    from datetime import datetime, timezone

    from .core import paths

    t0 = time.perf_counter()
    stage_times = {}
    n = reproduce(workers=a.workers, only=a.only, seeds=a.seeds, tasks=a.task, retime=a.retime, stage_times=stage_times,
                  executor=a.executor, address=a.address)
    wall = time.perf_counter() - t0
    print(f"{'re-timed' if a.retime else 'computed'} {n} runs in {wall:.0f} s wall time "
          f"({a.executor} executor); every result is in {paths.RESULTS_DIR} (python -m qmoe results --csv)")
    if n:  # a record of how long the grid took, stage by stage (results/reproduce-log.jsonl)
        entry = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": n, "wall_s": round(wall),
                 "workers": a.workers or (None if a.address else os.cpu_count()), "retime": a.retime,
                 "executor": a.executor, **({"address": a.address} if a.address else {}),
                 "stages": {k: {"runs": r, "wall_s": round(t)} for k, (r, t) in stage_times.items()}}
        with open(paths.RESULTS_DIR / "reproduce-log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")


def _flat_ints(values) -> list[int] | None:
    """`--folds 1 2` and `--folds 1,2` alike (each token parsed by `_ints`)."""
    return None if values is None else [i for v in values for i in v]


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")
    return text == "yes"


def cmd_sweep(a):
    """A sweep (qmoe.experiments.sweep) on every core: its points, their mean over folds, and how long it took."""
    from .experiments.sweep import DEFAULT_VARIANT, DEFAULT_WORKERS, Sweep, run_sweep, summary

    moe = {k: v for k, v in (("temperature", a.T), ("top_k", a.top_k), ("mc_samples", a.mc), ("bayesian", a.bayesian),
                             ("curiosity_mode", a.curiosity), ("curiosity_in_training", a.in_training)) if v}
    experts = [[e.strip() for e in s.split(",") if e.strip()] for s in a.experts or []]
    variants = a.bases or ([DEFAULT_VARIANT] if (a.alpha or moe) and not experts else [])
    sweep = Sweep(variants, alphas=a.alpha or (), bits=a.bits or (), experts=experts, moe=moe, dataset=a.dataset,
                  tasks=a.task or ["major"], protocols=a.protocol or ["predefined"], folds=_flat_ints(a.folds),
                  seeds=_flat_ints(a.seeds) or [0], selection=a.selection, backbone=a.backbone)
    workers = a.workers or (DEFAULT_WORKERS if a.executor == "local" else None)
    print(f"sweep {sweep.describe()}: {len(sweep.points())} runs, {a.executor} executor"
          + (f", {workers} workers" if workers else ""))
    t0 = time.perf_counter()
    try:
        df = run_sweep(sweep, executor=a.executor, workers=workers, address=a.address)
    except KeyboardInterrupt:
        print("interrupted: the runs that finished are cached (each whole); run the same sweep again to go on",
              file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    cols = [c for c in ("variant", "options", "task", "protocol", "fold", "seed", "bits", "alpha", "f1_macro",
                        "accuracy", "model_bytes", "latency_ms_mean", "new") if df[c].notna().any()]
    print(df[cols].to_string(index=False, float_format="%.4g"))
    print()
    table = summary(df).drop(columns=["base"])
    print(table.loc[:, table.notna().any() | (table.columns == "options")].to_string(index=False, float_format="%.4g"))
    new = int(df["new"].sum())
    print(f"\n{new} run(s) computed, {len(df) - new} read back from the cache, in {wall:.0f} s wall time "
          f"({a.executor} executor{f', {workers} workers' if workers else ''})")


def cmd_data(a):
    from .datasets.cli import main_data

    return main_data(a.rest)


def cmd_claims(a):
    from .analysis.claims import main_claims

    return main_claims(a.rest)


def cmd_check_audio(a):
    from .app.inference import audio_path_check, shipped_models

    path = shipped_models().get(a.model) or a.model
    r = audio_path_check(path)
    print(f"fold-4 macro-F1 through the audio path: {r['f1_audio']:.4f}; on the shared figures: "
          f"{r['f1_figures']:.4f}; difference {r['f1_audio'] - r['f1_figures']:+.4f}; "
          f"same prediction on {100 * r['agreement']:.1f}% of {r['n']} clips")


def _executor_args(s) -> None:
    """--executor / --address of the commands that run a grid (`qmoe.experiments.executors`)."""
    s.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default: this machine's cores) | ray (a local Ray instance, or the cluster at --address)")
    s.add_argument("--address", default=None, help="with --executor ray: an existing Ray cluster, e.g. HEAD:6379 or "
                   "auto (the one `ray start` runs on this machine); default: start a private local Ray instance")


def main(argv=None) -> int:
    from .audio.backbones import DEFAULT_BACKBONE

    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = {"claims": cmd_claims, "data": cmd_data}  # they parse their own options (argparse's REMAINDER
    if argv and argv[0] in passthrough:                     # cannot capture a leading --option)
        return passthrough[argv[0]](argparse.Namespace(rest=argv[1:])) or 0

    p = argparse.ArgumentParser(prog="python -m qmoe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("embed", help="embed a dataset's figures (cached)")
    s.add_argument("dataset")
    s.add_argument("--backbone", default=DEFAULT_BACKBONE)
    s.set_defaults(fn=cmd_embed)

    s = sub.add_parser("train", help="train and evaluate variants under cross-validation (cached)")
    s.add_argument("--dataset", default="esc50")
    s.add_argument("--task", action="append", help="major (default) | class | reference-categories")
    s.add_argument("--protocol", action="append", help="predefined (default) | paper")
    s.add_argument("--variant", action="append", help="e.g. FP32-Base, Q4-Base (repeatable)")
    s.add_argument("--folds", type=_ints, default=None, help="e.g. 1,2 (default: all)")
    s.add_argument("--seeds", type=_ints, default=[0])
    s.add_argument("--selection", default="validation", help="validation (default) | reported-fold (leaky)")
    s.add_argument("--backbone", default=DEFAULT_BACKBONE)
    s.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    s.add_argument("--export", metavar="DIR", help="also write every fold's trained model as ONNX into DIR "
                   "(retrains cached runs: their weights are not cached)")
    _executor_args(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("export", help="write a trained model as ONNX (what a device runs on ONNX Runtime)")
    s.add_argument("--model", default="esc50 / major / FP32-Base", help="shipped model name or checkpoint path")
    s.add_argument("--out", required=True, help="the .onnx file to write")
    s.add_argument("--any-batch", action="store_true", help="any batch size (default: one clip per call, static)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("results", help="every cached result")
    s.add_argument("--csv", action="store_true", help="as CSV on stdout")
    s.add_argument("--summary", action="store_true", help="mean +- std over folds")
    s.set_defaults(fn=cmd_results)

    s = sub.add_parser("variants", help="list the registered variants")
    s.set_defaults(fn=cmd_variants)

    s = sub.add_parser("ship", help="train the models shipped in data/models (fold 4 held out)")
    s.add_argument("--dataset", default="esc50")
    s.add_argument("--task", action="append")
    s.add_argument("--variant", action="append")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_ship)

    s = sub.add_parser("classify", help="classify audio files (or folders of them) with a shipped model")
    s.add_argument("files", nargs="+", metavar="PATH", help="audio file, or folder (its audio files, recursively)")
    s.add_argument("--model", default="esc50 / major / FP32-Base")
    s.add_argument("--csv", metavar="FILE", help="also write one row per file (file, label, confidence, model, "
                   "windows, error) to FILE; '-' for stdout (then the CSV only)")
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("reproduce", help="run the whole ESC-50 grid (resumable; finished runs are skipped)")
    s.add_argument("--workers", type=int, default=None, help="parallel processes, or CPUs of the local Ray instance "
                   "(default: CPU count)")
    s.add_argument("--only", action="append", help="run only this stage (repeatable; see --list)")
    s.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4], help="seeds of the variance stages")
    s.add_argument("--list", action="store_true", help="list the stages, their sizes and how much is cached")
    s.add_argument("--task", action="append", help="only runs of this task (repeatable)")
    s.add_argument("--retime", action="store_true",
                   help="re-run cached runs to re-measure latency/energy on a quiet machine (use --workers 1); "
                        "predictions must match the cached ones exactly")
    _executor_args(s)
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("sweep", help="sweep alpha / bit-width / MoE options / expert sets over folds and seeds, on "
                       "every core (cached points are read back)")
    s.add_argument("--variant", action="append", dest="bases", help="a base variant (repeatable): a paper MoE such as "
                   "BitNet-Q4/8-QMoE-C (the default with --alpha), a single model, Q<k>-Base, or MoE(... | ...)")
    s.add_argument("--alpha", type=float, nargs="+", help="curiosity strengths, e.g. --alpha 0.05 0.5 0.7")
    s.add_argument("--bits", type=int, nargs="+", help="BitLinear widths: Q<k>-Base for each, e.g. --bits 3 5 6")
    s.add_argument("--experts", action="append", help="an expert set, comma-separated (repeatable): an MoE of them, "
                   "the paper's MoE-C recipe unless the options below say otherwise")
    s.add_argument("--T", type=float, nargs="+", help="routing temperatures")
    s.add_argument("--top-k", type=int, nargs="+", help="experts per sample")
    s.add_argument("--mc", type=int, nargs="+", help="Monte Carlo dropout passes of the Bayesian router")
    s.add_argument("--bayesian", type=_yes_no, nargs="+", help="yes / no: route on the MC-dropout mean")
    s.add_argument("--curiosity", nargs="+", help="paper | reference-main | reference-rebuttal")
    s.add_argument("--in-training", type=_yes_no, nargs="+", help="yes / no: curiosity applied in training too")
    s.add_argument("--dataset", default="esc50")
    s.add_argument("--task", action="append", help="major (default) | class | reference-categories")
    s.add_argument("--protocol", action="append", help="predefined (default) | paper")
    s.add_argument("--folds", type=_ints, nargs="+", help="e.g. 1 2 or 1,2 (default: all)")
    s.add_argument("--seeds", type=_ints, nargs="+", help="e.g. 0 1 2 (default: 0)")
    s.add_argument("--selection", default="validation", help="validation (default) | reported-fold (leaky)")
    s.add_argument("--backbone", default=DEFAULT_BACKBONE)
    s.add_argument("--workers", type=int, default=None, help="parallel processes (default: 2), or CPUs of the "
                   "local Ray instance")
    _executor_args(s)
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("claims", help="hold the paper's claims against the cache; writes results/claims.csv")
    s.add_argument("rest", nargs=argparse.REMAINDER, help="[--csv] [--out PATH]")
    s.set_defaults(fn=cmd_claims)

    s = sub.add_parser("data", help="download / prepare / check ESC-50, UrbanSound8K, Quinn")
    s.add_argument("rest", nargs=argparse.REMAINDER, help="download NAME | prepare NAME --from X | check NAME DIR")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("check-audio", help="fold-4 F1 through the audio path vs the shared figures")
    s.add_argument("--model", default="esc50 / major / FP32-Base")
    s.set_defaults(fn=cmd_check_audio)

    a = p.parse_args(argv)
    for name, default in (("protocol", ["predefined"]), ("variant", ["FP32-Base"])):  # train picks its task
        if hasattr(a, name) and getattr(a, name) is None:
            setattr(a, name, default)
    try:
        return a.fn(a) or 0
    except QmoeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
