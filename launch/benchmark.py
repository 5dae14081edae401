"""Train and evaluate every category of one or more dataset roots; write the paper-style table.

``python -m launch.benchmark --config=configs/cps.py --root=/data/mvtec_anomaly_detection --out=runs/mvtec``

A category is a folder with ``train/good/`` (MVTec AD layout). Each ``--root`` is such a folder, or holds
them (``ROOT/CATEGORY/``), or holds datasets that hold them (``ROOT/DATASET/CATEGORY/``, as
``../shared/data``). Every category trains in its own workdir ``OUT/<category>`` through
``python -m sla_jax.train`` (``launch.sweep``'s runner: resumable, finished ones skipped, one after
another or as SLURM jobs with ``--backend=slurm``). Then ``OUT/benchmark.{md,csv,json}``: image AUROC per
category (pixel AUROC and AUPRO where the config localizes) and the mean over categories, under a
header with the config, its overrides and the commit; and ``OUT/report.html``.

``--sweep=FILE`` instead of ``--config``: every point of a sweep file (``launch.sweep``'s format: base
config, ``grid``, ``points``, ``fixed``) runs on every category, in ``OUT/<category>/<point>``. The table
then has one column per configuration (mean ± sample std over ``seed``), and where ``labels.mode`` takes
``hard`` and ``soft`` the paper's Table 3: per configuration AUROC without and with SLA and the
relative improvement, per category and averaged (``configs/ablation_sweep.py``).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from launch import sweep as sweep_lib
from launch.arguments import Parser, fail
from launch.categories import Category, discover
from sla_jax.common.runtime import source_commit as commit
from sla_jax.outputs import atomic, report
from sla_jax.outputs.html_page import mean_only, mean_std, percent

RECORD = "benchmark.json"
OUTPUT = "benchmark"
REPLICATE_KEY = "seed"
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
REPO = Path(__file__).resolve().parents[1]


def config_sweep(config: str, *, extra_fixed: dict) -> sweep_lib.Sweep:
    """A one-point sweep of ``config`` (the plain benchmark)."""
    path = os.path.abspath(config)
    if not os.path.isfile(path):
        raise sweep_lib.SweepError(f"--config={config}: {path} not found")
    sweep = sweep_lib.Sweep(
        source=path,
        config=path,
        grid={},
        points=[{}],
        fixed=dict(extra_fixed),
        executor=dict(sweep_lib.DEFAULT_EXECUTOR),
    )
    sweep_lib.check_keys(sweep)
    return sweep


def expand(sweep: sweep_lib.Sweep, categories: Sequence[Category], out: str) -> list[sweep_lib.Point]:
    """Every sweep point on every category: workdir ``OUT/<category>[/<point>]``."""
    points = []
    for cat in categories:
        data = {"data.root": cat.root, "data.category": cat.category}
        for base in sweep_lib.expand(sweep, os.path.join(out, cat.name)):
            single = base.name == "base"
            points.append(
                sweep_lib.Point(
                    name=cat.name if single else f"{cat.name}/{base.name}",
                    config=base.config,
                    workdir=os.path.join(os.path.abspath(out), cat.name) if single else base.workdir,
                    overrides={**base.overrides, **data},
                    varying={"category": cat.name, **base.varying},
                )
            )
    return points


def record(sweep: sweep_lib.Sweep, points: Sequence[sweep_lib.Point], out: str, *, command: str) -> dict:
    """Write OUT/benchmark.json (refusing a folder whose points meant other runs) and each point's record."""
    sweep_lib.check_out_folder(out, flag="--out")
    path = os.path.join(out, RECORD)
    entries = [
        {
            "name": p.name,
            "workdir": os.path.relpath(p.workdir, os.path.abspath(out)),
            "overrides": p.overrides,
            "varying": p.varying,
        }
        for p in points
    ]
    sweep_lib.check_same_runs(path, entries, folder=out)
    earlier = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
    commits = list(dict.fromkeys([*earlier.get("commits", []), commit()]))  # every checkout that ran a part
    meta = {
        "source": sweep.source,
        "config": sweep.config,
        "fixed": sweep.fixed,
        "grid": sweep.grid,
        "transform": _common_transform(sweep, points),
        "commits": commits,
        "commit": ", ".join(commits),
        "command": command,
        "date": earlier.get("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        "points": entries,
    }
    atomic.write_json(path, meta)
    sweep_lib.write_point_records(points)
    return meta


def _common_transform(sweep: sweep_lib.Sweep, points: Sequence[sweep_lib.Point]) -> str | None:
    """The transform every run uses (None when it varies): names Table 3's row when only labels.mode varies."""
    names = {p.overrides.get("transform.name") for p in points}
    if names == {None}:
        return str(sweep_lib.base_config(sweep.config).transform.name)
    return names.pop() if len(names) == 1 else None


# ----------------------------------------------------------------------------- tables


def gather(out: str) -> tuple[dict, list[dict]]:
    """The benchmark's record and one row per run: its varying keys, status, metrics and wall time."""
    path = os.path.join(out, RECORD)
    if not os.path.isfile(path):
        raise sweep_lib.FolderError(f"{path} not found: --out must be a folder written by python -m launch.benchmark")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    rows = []
    for point in meta["points"]:
        workdir = os.path.join(out, point["workdir"])
        row = {"name": point["name"], "workdir": point["workdir"], **point["varying"], "status": "missing"}
        results_path = os.path.join(workdir, sweep_lib.RESULTS)
        if os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = json.load(f)
            row.update(
                status="done",
                **{m: results[m] for m in METRICS if m in results},
                **{f"{m}_undefined": results[f"{m}_undefined"] for m in METRICS if f"{m}_undefined" in results},
                steps=results.get("steps"),
                n_train=results.get("n_train"),
                n_test=results.get("n_test"),
            )
            timing_path = os.path.join(workdir, "timing.json")
            if os.path.isfile(timing_path):
                with open(timing_path, encoding="utf-8") as f:
                    row["seconds"] = json.load(f).get("seconds")
        rows.append(row)
    return meta, rows


def setting_keys(rows: Sequence[dict]) -> list[str]:
    """Varying keys other than the category and the seed: what tells one configuration from another."""
    keys = dict.fromkeys(
        k
        for r in rows
        for k in r
        if k
        not in (
            "name",
            "workdir",
            "status",
            "category",
            REPLICATE_KEY,
            "seconds",
            "steps",
            "n_train",
            "n_test",
            *METRICS,
        )
        and not k.endswith("_undefined")
    )
    return [
        k
        for k in keys
        if len({repr(r[k]) if k in r else "unset" for r in rows}) > 1 or k in ("transform.name", "labels.mode")
    ]


def setting_label(row: dict, keys: Sequence[str]) -> str:
    """The keys this run's point sets, short; a point that sets none of them runs the base config."""
    parts = []
    for key in keys:
        if key not in row:
            continue
        value = row[key]
        if key == "transform.name":
            parts.append(str(value).upper())
        elif key == "labels.mode":
            parts.append("SLA" if value == "soft" else str(value))
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return "-".join(parts) or ("base config" if keys else "image AUROC")


def summarize(rows: Sequence[dict], *, metric: str = "image_auroc") -> dict:
    """{category: {setting: {"mean", "std", "n", "values"}}}, plus "mean over categories" per setting
    (the mean of the per-category means, over the categories where the setting finished)."""
    keys = setting_keys(rows)
    cells: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["status"] == "done" and r.get(metric) is not None:
            cells.setdefault(r["category"], {}).setdefault(setting_label(r, keys), []).append(float(r[metric]))
    table = {cat: {s: _stats(v) for s, v in by_setting.items()} for cat, by_setting in cells.items()}
    settings = list(dict.fromkeys(setting_label(r, keys) for r in rows))
    table["mean over categories"] = {
        s: {
            **_stats([table[c][s]["mean"] for c in cells if s in table[c]]),
            "n_categories": sum(s in table[c] for c in cells),
        }
        for s in settings
        if any(s in table[c] for c in cells)
    }
    return {"keys": keys, "settings": settings, "categories": list(cells), "table": table}


def undefined_runs(rows: Sequence[dict]) -> list[dict]:
    """Finished runs whose image AUROC is undefined (a test set without good or defective images)."""
    return [r for r in rows if r["status"] == "done" and r.get("image_auroc") is None]


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": int(len(v)),
        "values": [float(x) for x in v],
    }


def ablation(summary: dict, *, method: str | None = None) -> list[dict] | None:
    """Table 3: for each setting with ``hard`` and ``SLA`` variants, AUROC without/with SLA and RImp =
    (with − without) / without, per category and over categories; None when labels.mode does not vary.
    ``method`` names the row when the transform does not vary (e.g. "co" → "CO")."""
    settings = summary["settings"]
    pairs = []
    for s in settings:
        if s.endswith("-hard") or s == "hard":
            soft = s[: -len("hard")] + "SLA"
            if soft in settings:
                pairs.append((s[: -len("-hard")] if s != "hard" else (method or "all").upper(), s, soft))
    if not pairs:
        return None
    rows = []
    for name, hard, soft in pairs:
        for cat in [*summary["categories"], "mean over categories"]:
            cell = summary["table"].get(cat, {})
            if hard in cell and soft in cell:
                w_o, w = cell[hard], cell[soft]
                over = cat == "mean over categories"  # its spread is over categories, not seeds: not shown
                seeds = (
                    min(
                        summary["table"][c][s]["n"]
                        for c in summary["categories"]
                        for s in (hard, soft)
                        if s in summary["table"][c]
                    )
                    if over
                    else min(w_o["n"], w["n"])
                )
                rows.append(
                    {
                        "method": name,
                        "category": cat,
                        "without": w_o["mean"],
                        "without_std": None if over else w_o["std"],
                        "with": w["mean"],
                        "with_std": None if over else w["std"],
                        "n": seeds,
                        "rimp_percent": 100.0 * (w["mean"] - w_o["mean"]) / w_o["mean"],
                    }
                )
    return rows


def header_lines(meta: dict) -> list[str]:
    fixed = {k: v for k, v in meta["fixed"].items() if k not in ("data.root", "data.category", "data.cache_dir")}
    config = os.path.relpath(meta["config"], REPO) if meta["config"].startswith(str(REPO)) else meta["config"]
    return [
        f"- config: `{config}`"
        + (f" (sweep `{os.path.relpath(meta['source'], REPO)}`)" if meta["source"] != meta["config"] else ""),
        f"- overrides: {', '.join(f'`{k}={sweep_lib.format_value(v)}`' for k, v in fixed.items()) or 'none'}",
        *([f"- grid: {', '.join(f'`{k}` ∈ {v}' for k, v in meta['grid'].items())}"] if meta["grid"] else []),
        f"- commit: `{meta['commit']}`"
        if len(meta.get("commits", [])) < 2
        else f"- commits (the runs were trained by several checkouts): `{meta['commit']}`",
        f"- started: {meta['date']}",
        f"- command: `{meta['command']}`",
    ]


def markdown(meta: dict, rows: Sequence[dict], summary: dict, table3: list[dict] | None) -> str:
    done = sum(r["status"] == "done" for r in rows)
    lines = [f"# Benchmark: {done}/{len(rows)} runs finished", "", *header_lines(meta), ""]
    settings = summary["settings"]
    seeds = any(summary["table"][c][s]["n"] > 1 for c in summary["categories"] for s in summary["table"][c])
    lines += [
        "Image AUROC (%)"
        + (", mean ± sample std over seeds; the last row: the mean of the categories' means" if seeds else "")
        + ":",
        "",
    ]
    lines += ["| category | " + " | ".join(settings) + " |", "| --- |" + " ---: |" * len(settings)]
    for cat in summary["categories"]:
        lines.append(f"| {cat} | " + " | ".join(mean_std(summary["table"][cat].get(s)) for s in settings) + " |")
    means = summary["table"].get("mean over categories", {})
    lines.append(
        "| **mean over categories** | " + " | ".join(mean_std(mean_only(means.get(s))) for s in settings) + " |"
    )
    left_out = undefined_runs(rows)
    if left_out:
        lines += [
            "",
            "Left out of the means (their AUROC is undefined): "
            + "; ".join(f"{r['name']} ({r['image_auroc_undefined']})" for r in left_out)
            + ".",
        ]
    if any(m in r for r in rows for m in ("pixel_auroc", "pixel_aupro")):
        lines += ["", "Localization (%):", "", "| run | pixel AUROC | AUPRO (FPR ≤ 0.3) |", "| --- | ---: | ---: |"]
        lines += [f"| {r['name']} | {percent(r.get('pixel_auroc'))} | {percent(r.get('pixel_aupro'))} |" for r in rows]
        pix = summarize(rows, metric="pixel_auroc")["table"].get("mean over categories", {})
        lines += [
            f"| **mean pixel AUROC over categories** | {' / '.join(mean_std(mean_only(c)) for c in pix.values())} | |"
        ]
    if table3:
        lines += [
            "",
            "Soft vs hard labels (the paper's Table 3), image AUROC (%), mean ± sample std over seeds; "
            "RImp = (w − w/o) / w/o:",
            "",
            "| method | category | w/o SLA | w SLA | RImp (%) | seeds |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in table3:
            cat = f"**{r['category']}**" if r["category"] == "mean over categories" else r["category"]
            without = mean_std({"mean": r["without"], "std": r["without_std"], "n": r["n"]})
            with_ = mean_std({"mean": r["with"], "std": r["with_std"], "n": r["n"]})
            lines.append(f"| {r['method']} | {cat} | {without} | {with_} | {r['rimp_percent']:+.2f} | {r['n']} |")
    lines += [
        "",
        "Every run:",
        "",
        "| run | status | image AUROC | steps | train images | test images | wall s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        auc = f"{r['image_auroc']:.4f}" if r.get("image_auroc") is not None else "–"
        seconds = f"{r['seconds']:.0f}" if r.get("seconds") is not None else "–"
        lines.append(
            f"| {r['name']} | {r['status']} | {auc} | {r.get('steps', '–')} | {r.get('n_train', '–')} | "
            f"{r.get('n_test', '–')} | {seconds} |"
        )
    total = sum(r.get("seconds") or 0.0 for r in rows)
    lines += ["", f"Total wall time of the finished runs: {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def write_tables(out: str) -> dict:
    """Write OUT/benchmark.{md,csv,json-summary} and OUT/report.html; returns what was written."""
    meta, rows = gather(out)
    summary = summarize(rows)
    table3 = ablation(summary, method=meta.get("transform"))
    base = os.path.join(out, OUTPUT)
    atomic.write_text(base + ".md", markdown(meta, rows, summary, table3))
    columns = [
        "name",
        "category",
        *summary["keys"],
        REPLICATE_KEY,
        "status",
        *METRICS,
        "steps",
        "n_train",
        "n_test",
        "seconds",
    ]
    with atomic.replacing(base + ".csv", "w", newline="", encoding="utf-8") as f:
        f.write(f"# config={meta['config']} commit={meta['commit']} started={meta['date']}\n")
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(columns)), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic.write_json(
        base + "_summary.json",
        {"meta": {k: v for k, v in meta.items() if k != "points"}, "rows": rows, "summary": summary, "table3": table3},
    )
    html = report.write_benchmark_report(out, meta=meta, rows=rows, summary=summary, table3=table3)
    return {
        "files": [base + ".md", base + ".csv", base + "_summary.json", html],
        "rows": rows,
        "summary": summary,
        "table3": table3,
    }


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m launch.benchmark", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--config", help="config file trained on every category, e.g. configs/cps.py")
    what.add_argument(
        "--sweep", help="sweep file whose every point runs on every category, e.g. configs/ablation_sweep.py"
    )
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        help="dataset root (repeatable): a category, a folder of categories, or a folder of datasets",
    )
    parser.add_argument("--category", action="append", default=[], help="only these categories (repeatable)")
    parser.add_argument("--out", required=True, help="benchmark folder: one workdir per category (and point)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed override for every run (repeatable), e.g. --set=train.steps=2000",
    )
    parser.add_argument("--backend", choices=sweep_lib.BACKENDS, default="local")
    parser.add_argument("--jobs", type=int, default=1, help="local backend: runs at once")
    parser.add_argument(
        "--tables_only",
        action="store_true",
        help="rewrite the tables and report of --out from what is there; train nothing",
    )
    args = parser.parse_args(argv)
    if not args.tables_only and not (args.root and (args.config or args.sweep)):
        parser.error("--root and one of --config or --sweep are required (or --tables_only with --out)")
    command = "python -m launch.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if args.tables_only:
            written = write_tables(args.out)
            print(open(written["files"][0], encoding="utf-8").read(), end="")
            return 0
        extra = dict(sweep_lib.parse_set(s) for s in args.set)
        sweep = (
            sweep_lib.load_sweep(args.sweep, extra_fixed=extra)
            if args.sweep
            else config_sweep(args.config, extra_fixed=extra)
        )
        categories = discover(args.root, only=args.category)
        points = expand(sweep, categories, args.out)
        sweep_lib.check_points(points)
        record(sweep, points, args.out, command=command)
    except sweep_lib.SweepError as e:
        return fail(e)
    pending = [p for p in points if not sweep_lib.is_finished(p)]
    print(
        f"benchmark: {len(categories)} categories ({', '.join(c.name for c in categories)}), {len(points)} runs in "
        f"{os.path.abspath(args.out)}; {len(points) - len(pending)} finished (skipped), {len(pending)} to run",
        flush=True,
    )
    results = []
    if pending and args.backend == "local":
        results = sweep_lib.run_local(pending, jobs=args.jobs)
    elif pending:
        try:
            jobs = sweep_lib.submit(
                pending,
                cluster="slurm" if args.backend == "slurm" else "local",
                folder=os.path.join(args.out, "submitit"),
                parameters=sweep.executor,
            )
        except sweep_lib.SweepError as e:
            return fail(e)
        results = sweep_lib.wait(jobs, pending)
    written = write_tables(args.out)
    print(open(written["files"][0], encoding="utf-8").read(), end="")
    print("wrote " + ", ".join(written["files"]))
    for r in undefined_runs(written["rows"]):
        print(f"{r['name']}: left out of the means, image AUROC {r.get('image_auroc_undefined', 'undefined')}")
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        print(
            f"{len(failed)} run(s) failed: {', '.join(failed)} (see each run's train.log); run the same command "
            "again to retry them",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
