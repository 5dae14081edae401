"""``report.html``: one static page per run (and per benchmark) that opens offline.

Every image is embedded as a ``data:`` URI, so the page is one self-contained file that can be mailed
or moved; the PNGs are also written beside it. A run's page holds its results table, ROC curves, the
score histograms of good vs defective test images with the decision threshold, the training curves
and, for patch models, the defect-map grid. ``python -m sla_jax.report WORKDIR`` writes it again from
the files in the workdir.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence

import numpy as np

from sla_jax.density import DENSITIES
from sla_jax.outputs import atomic, plots, study_plots
from sla_jax.outputs.files import read_json, read_scores
from sla_jax.outputs.html_page import figure, html_table, mean_only, mean_std, page, percent

REPORT = "report.html"


def soft_label_summary(records: Sequence[dict]) -> str:
    """ "; over training: mean soft label 0.79, invalid edits 20.1 %" from ``metrics.jsonl`` records (each a
    window's mean, so the mean of records is over the logged steps); "" when they hold no labels."""
    labelled = [
        r
        for r in records
        if isinstance(r.get("mean_label"), (int, float)) and isinstance(r.get("invalid_fraction"), (int, float))
    ]
    if not labelled:
        return ""
    label = float(np.mean([r["mean_label"] for r in labelled]))
    invalid = float(np.mean([r["invalid_fraction"] for r in labelled]))
    return f"; over training: mean soft label {label:.2f}, invalid edits {100 * invalid:.1f} %"


def write_run_report(workdir: str) -> str:
    """Write ``scores.png``, ``training.png`` and ``report.html`` into a finished run's workdir."""
    results = read_json(os.path.join(workdir, "results.json"))
    if not results:
        raise FileNotFoundError(f"{os.path.join(workdir, 'results.json')} not found: the run has not finished")
    if "members" in results:
        return write_ensemble_report(workdir, results)
    config = read_json(os.path.join(workdir, "config.json"))
    timing = read_json(os.path.join(workdir, "timing.json"))
    name = (
        f"{results.get('category', '?')}: {str(results.get('transform', '')).upper()}-"
        f"{'hard' if results.get('labels') == 'hard' else 'SLA'}"
    )
    figures = []
    scores_csv = os.path.join(workdir, "scores.csv")
    if os.path.isfile(scores_csv):
        scores, labels, _ = read_scores(scores_csv)
        kind = DENSITIES.get(results.get("density", "gde"))
        density = kind.score_name if kind else "anomaly score"
        what = "maximum of the defect map" if results.get("image_score") else density
        plots.plot_score_histogram(
            scores,
            labels,
            os.path.join(workdir, "scores.png"),
            threshold=results.get("threshold"),
            title=f"{name}: test scores",
            xlabel=f"anomaly score ({what})",
        )
        figures.append(
            (
                "scores.png",
                "Scores of good and defective test images; dashed: the decision threshold "
                "(set from the training images, not the test set).",
            )
        )
    if os.path.isfile(os.path.join(workdir, "roc.png")):
        figures.insert(0, ("roc.png", "ROC curves, overall and per defect type."))
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    records = []
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        if plots.plot_training(records, os.path.join(workdir, "training.png"), title=f"{name}: pretext training"):
            figures.append(
                (
                    "training.png",
                    "Pretext training: loss, accuracy, the mean soft label of edited images "
                    "and the fraction of edits that changed (almost) nothing.",
                )
            )
    rows = [
        (
            "image AUROC",
            percent(results.get("image_auroc"))
            + (f" ({html.escape(results['image_auroc_undefined'])})" if results.get("image_auroc_undefined") else ""),
        )
    ]
    rows += [(f"&nbsp;&nbsp;{html.escape(t)}", percent(v)) for t, v in results.get("per_defect_type_auroc", {}).items()]
    for key, label in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AUPRO (FPR ≤ 0.3)")):
        if key in results:
            rows.append((label, percent(results[key])))
    rows += [
        ("test false-positive rate at the threshold", percent(results.get("test_false_positive_rate"))),
        ("test true-positive rate at the threshold", percent(results.get("test_true_positive_rate"))),
    ]
    quantile = config.get("eval", {}).get("threshold_quantile")
    decision = [
        (
            "decision threshold (anomaly score)",
            plots.number(results["threshold"]) if results.get("threshold") is not None else "–",
        ),
        (
            "set at",
            f"the {quantile:g} quantile of out-of-fold scores of training images (not the test set)"
            if quantile is not None
            else "–",
        ),
    ]
    facts = [
        ("data", html.escape(f"{results.get('data_root', '')}/{results.get('category', '')}")),
        (
            "images",
            f"{results.get('n_train', '?')} train, {results.get('n_test_good', '?')} good and "
            f"{results.get('n_test_defective', '?')} defective test",
        ),
        ("image size", f"{results.get('image_size', '?')} px"),
        (
            "training",
            f"{results.get('steps', '?')} steps of {config.get('train', {}).get('batch_size', '?')}, "
            f"{html.escape(str(results.get('init', 'random')))} init; every number here is of the "
            f"checkpoint of step {results.get('checkpoint_step', '?')}",
        ),
        ("labels", html.escape(f"{results.get('labels')} (α = {results.get('alpha')})") + soft_label_summary(records)),
        ("wall time", f"{timing['seconds']:.0f} s" if "seconds" in timing else "–"),
    ]
    if results.get("skipped_files"):
        facts.append(("files left out", "<br>".join(html.escape(s) for s in results["skipped_files"])))
    body = [
        html_table([], facts, facts=True),
        "<h2>Results (%)</h2>",
        html_table(["metric", "%"], rows),
        "<h2>Decision</h2>",
        html_table([], decision, facts=True),
        "<h2>Figures</h2>",
        *(figure(os.path.join(workdir, f), caption=c) for f, c in figures),
    ]
    if os.path.isfile(os.path.join(workdir, "heatmaps.png")):
        body += [
            "<h2>Defect maps</h2>",
            figure(
                os.path.join(workdir, "heatmaps.png"),
                caption="Test images with their defect maps; outline: ground truth.",
            ),
        ]
    body.append(
        f'<p class="meta">Written by sla_jax from {html.escape(os.path.abspath(workdir))}; '
        "results.json holds every number.</p>"
    )
    path = os.path.join(workdir, REPORT)
    atomic.write_text(path, page(f"sla_jax run — {name}", "\n".join(body)))
    return path


def write_ensemble_report(workdir: str, results: dict) -> str:
    """``report.html`` of a vmapped ensemble (an α sweep): the sweep table and plot, every member, training."""
    sweep = read_json(os.path.join(workdir, "alpha_sweep.json"))
    timing = read_json(os.path.join(workdir, "timing.json"))
    fmt = lambda v: "–" if v is None else f"{v:g}"  # noqa: E731
    table = html_table(
        ["labels", "α", "ε", "seeds", "mean", "std", "min", "max"],
        [
            [
                html.escape(r["labels"]),
                fmt(r["alpha"]),
                fmt(r["epsilon"]),
                len(r["seeds"]),
                percent(r["mean"]),
                percent(r["std"]),
                percent(r["min"]),
                percent(r["max"]),
            ]
            for r in sweep.get("rows", [])
        ],
    )
    pixel = any("pixel_auroc" in m for m in results["members"])
    members = html_table(
        ["member", "image AUROC", *(["pixel AUROC", "AUPRO"] if pixel else [])],
        [
            [
                html.escape(m["name"]),
                percent(m["image_auroc"]),
                *([percent(m.get("pixel_auroc")), percent(m.get("pixel_aupro"))] if pixel else []),
            ]
            for m in results["members"]
        ],
    )
    body = [
        html_table(
            [],
            [
                ("data", html.escape(f"{results.get('data_root', '')}/{results.get('category', '')}")),
                ("members", str(len(results["members"]))),
                ("steps", str(results.get("steps"))),
                ("wall time", f"{timing['seconds']:.0f} s" if "seconds" in timing else "–"),
            ],
            facts=True,
        ),
        f"<p>{html.escape(sweep.get('note', ''))}</p>",
        "<h2>Image AUROC (%) per label setting</h2>",
        table,
    ]
    if os.path.isfile(os.path.join(workdir, "alpha_sweep.png")):
        body.append(
            figure(
                os.path.join(workdir, "alpha_sweep.png"),
                caption="Image AUROC (patch models: also pixel AUROC and AUPRO) against α; dots: seeds.",
            )
        )
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        if plots.plot_training(
            records, os.path.join(workdir, "training.png"), title="pretext training (mean of members)"
        ):
            body.append(figure(os.path.join(workdir, "training.png"), caption="Pretext training, mean over members."))
    body += ["<h2>Members</h2>", members]
    path = os.path.join(workdir, REPORT)
    atomic.write_text(path, page(f"sla_jax ensemble — {results.get('category', '')}", "\n".join(body)))
    return path


def write_benchmark_report(
    out: str, *, meta: dict, rows: Sequence[dict], summary: dict, table3: Sequence[dict] | None
) -> str:
    """Write ``benchmark.png`` and ``report.html`` into a benchmark folder (``launch.benchmark``)."""
    done = [r for r in rows if r["status"] == "done"]
    study_plots.plot_benchmark(
        summary, os.path.join(out, "benchmark.png"), title=f"{len(done)}/{len(rows)} runs finished"
    )
    categories = [*summary["categories"], "mean over categories"]
    main_table = html_table(
        ["category", *summary["settings"]],
        [
            [
                html.escape(c),
                *(
                    mean_std(
                        summary["table"].get(c, {}).get(s)
                        if c != categories[-1]
                        else mean_only(summary["table"].get(c, {}).get(s))
                    )
                    for s in summary["settings"]
                ),
            ]
            for c in categories
        ],
    )
    body = [
        html_table(
            [],
            [(k, html.escape(str(meta.get(k, "")))) for k in ("config", "commit", "date", "command")]
            + [("overrides", html.escape(", ".join(f"{k}={v}" for k, v in meta.get("fixed", {}).items())))],
            facts=True,
        ),
        "<h2>Image AUROC (%)</h2>",
        "<p>Mean ± sample standard deviation over seeds, where there are several; the last row is the mean of "
        "the categories' means.</p>",
        main_table,
        figure(os.path.join(out, "benchmark.png"), caption="Image AUROC per category; bars: the seed range."),
    ]
    if table3:
        body += [
            "<h2>Soft vs hard labels (paper Table 3)</h2>",
            html_table(
                ["method", "category", "w/o SLA", "w SLA", "RImp (%)", "seeds"],
                [
                    [
                        html.escape(r["method"]),
                        html.escape(r["category"]),
                        mean_std({"mean": r["without"], "std": r["without_std"], "n": r["n"]}),
                        mean_std({"mean": r["with"], "std": r["with_std"], "n": r["n"]}),
                        f"{r['rimp_percent']:+.2f}",
                        r["n"],
                    ]
                    for r in table3
                ],
            ),
        ]
    body.append("<h2>Runs</h2>")
    run_rows = []
    for r in rows:
        link = os.path.join(r["workdir"], REPORT)
        name = (
            f'<a href="{html.escape(link)}">{html.escape(r["name"])}</a>'
            if os.path.isfile(os.path.join(out, link))
            else html.escape(r["name"])
        )
        run_rows.append(
            [
                name,
                r["status"],
                percent(r.get("image_auroc")),
                percent(r.get("pixel_auroc")),
                r.get("steps", "–"),
                f"{r['seconds']:.0f}" if r.get("seconds") else "–",
            ]
        )
    body.append(html_table(["run", "status", "image AUROC", "pixel AUROC", "steps", "wall s"], run_rows))
    for r in done:
        pictures = [
            (f, c)
            for f, c in (("roc.png", "ROC"), ("scores.png", "scores"), ("heatmaps.png", "defect maps"))
            if os.path.isfile(os.path.join(out, r["workdir"], f))
        ]
        if pictures:
            body.append(f"<h2>{html.escape(r['name'])}</h2>")
            body += [
                figure(os.path.join(out, r["workdir"], f), caption=f"{r['name']}: {c}", width=360) for f, c in pictures
            ]
    path = os.path.join(out, REPORT)
    atomic.write_text(path, page("sla_jax benchmark", "\n".join(body)))
    return path
