"""Gather a sweep's results into one table and one plot.

``python -m launch.collect --sweep_dir=runs/demo_sweep [--x=labels.alpha] [--metric=image_auroc]``

Reads ``SWEEP_DIR/sweep.json`` (written by ``launch.sweep``) and every point's ``results.json``; writes
``sweep_results.json``, ``.csv``, ``.md`` and ``.png`` into SWEEP_DIR. Points without results (not run
yet, running, failed) are listed with status ``missing``. The plot draws ``metric`` against the ``x``
key, one line per combination of the other varying keys, the mean over ``seed`` with its min-max range;
without a numeric x key it draws one bar per point.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.arguments import Parser, fail  # noqa: E402
from launch.sweep import RESULTS, SWEEP_RECORD, FolderError, SweepError  # noqa: E402
from sla_jax.outputs import atomic  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro", "steps", "train_seconds")
REPLICATE_KEY = "seed"
OUTPUT = "sweep_results"


def gather(sweep_dir: str) -> tuple[list[dict], list[str]]:
    """One row per point (name, its varying overrides, status, metrics) and the varying keys."""
    path = os.path.join(sweep_dir, SWEEP_RECORD)
    if not os.path.isfile(path):
        raise FolderError(f"{path} not found: --sweep_dir must be a folder written by python -m launch.sweep")
    with open(path, encoding="utf-8") as f:
        sweep = json.load(f)
    rows = []
    for point in sweep["points"]:
        row = {"name": point["name"], **point["varying"]}
        results_path = os.path.join(sweep_dir, point["name"], RESULTS)
        if os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = json.load(f)
            timing_path = os.path.join(sweep_dir, point["name"], "timing.json")
            if os.path.isfile(timing_path):  # wall times live beside results.json
                with open(timing_path, encoding="utf-8") as f:
                    results = {**json.load(f), **results}
            row.update(status="done", **{m: results[m] for m in METRICS if m in results})
        else:
            row["status"] = "missing"
        rows.append(row)
    return rows, list(sweep["varying_keys"])


def default_x(rows: Sequence[dict], keys: Sequence[str]) -> str | None:
    """``labels.alpha`` when it varies, else the first numeric varying key other than ``seed``."""
    numeric = [
        k
        for k in keys
        if k != REPLICATE_KEY
        and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows)
    ]
    return "labels.alpha" if "labels.alpha" in numeric else (numeric[0] if numeric else None)


def write_tables(rows: Sequence[dict], keys: Sequence[str], sweep_dir: str) -> list[str]:
    columns = ["name", *keys, "status", *[m for m in METRICS if any(m in r for r in rows)]]
    base = os.path.join(sweep_dir, OUTPUT)
    atomic.write_json(base + ".json", {"varying_keys": list(keys), "rows": list(rows)})
    with atomic.replacing(base + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    atomic.write_text(base + ".md", "\n".join(lines) + "\n")
    return [base + ext for ext in (".json", ".csv", ".md")]


def plot(rows: Sequence[dict], keys: Sequence[str], path: str, *, metric: str, x: str | None, title: str) -> None:
    """``metric`` against ``x`` (mean over seeds, min-max band, every run as a dot), or bars per point."""
    done = [r for r in rows if metric in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if x is None:
        ax.bar(range(len(done)), [r[metric] for r in done])
        ax.set_xticks(range(len(done)), [r["name"] for r in done], rotation=30, ha="right", fontsize=8)
    else:
        others = [k for k in keys if k not in (x, REPLICATE_KEY)]
        groups: dict[tuple, list[dict]] = {}
        for r in done:
            groups.setdefault(tuple(r.get(k) for k in others), []).append(r)
        for group, members in groups.items():
            xs = sorted({r[x] for r in members})
            values = [[r[metric] for r in members if r[x] == v] for v in xs]
            label = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or None
            (line,) = ax.plot(xs, [np.mean(v) for v in values], marker="o", label=label)
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.2)
            ax.scatter([r[x] for r in members], [r[metric] for r in members], color=line.get_color(), s=10)
        if all(r[x] > 0 for r in done) and len({r[x] for r in done}) > 2:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        if len(groups) > 1:
            ax.legend(fontsize=8)
    n_seeds = len({r.get(REPLICATE_KEY) for r in done})
    ax.set_ylabel(metric + (f" (mean and range over {n_seeds} seeds)" if x and n_seeds > 1 else ""))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic.save_figure(fig, path)
    plt.close(fig)


def collect(sweep_dir: str, *, metric: str = "image_auroc", x: str | None = None) -> dict:
    """Write the table files and the plot; returns their paths and the rows."""
    rows, keys = gather(sweep_dir)
    if x is not None and x not in keys:
        raise SweepError(f"--x={x} is not a varying key of this sweep; varying keys: {', '.join(keys)}")
    x = x or default_x(rows, keys)
    files = write_tables(rows, keys, sweep_dir)
    png = os.path.join(sweep_dir, OUTPUT + ".png")
    done = sum(r["status"] == "done" for r in rows)
    plot(
        rows,
        keys,
        png,
        metric=metric,
        x=x,
        title=f"{os.path.basename(os.path.abspath(sweep_dir))}: {done}/{len(rows)} points finished",
    )
    return {"rows": rows, "files": [*files, png], "x": x}


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m launch.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep_dir", required=True, help="a folder written by python -m launch.sweep")
    parser.add_argument("--metric", default="image_auroc", choices=METRICS[:3], help="the plotted metric")
    parser.add_argument("--x", default=None, help="varying key on the x axis (default: labels.alpha if it varies)")
    args = parser.parse_args(argv)
    try:
        out = collect(args.sweep_dir, metric=args.metric, x=args.x)
    except SweepError as e:
        return fail(e)
    with open(out["files"][2], encoding="utf-8") as f:
        print(f.read(), end="")
    print("wrote " + ", ".join(out["files"]))
    missing = [r["name"] for r in out["rows"] if r["status"] != "done"]
    if missing:
        print(f"{len(missing)} point(s) without results: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
