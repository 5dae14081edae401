"""Every file a run writes besides checkpoints and figures: results.json, timing.json, scores.csv, the fitted
density, the defect maps, predictions, the α-sweep tables, the invalid-edit analysis; and their readers."""

from __future__ import annotations

import contextlib
import csv
import json
import os

import numpy as np

from sla_jax.outputs import atomic, board, study_plots


def read_json(path: str) -> dict:
    """The JSON object in ``path``; {} when there is none (or it is not a JSON object: rewritten whole)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def summary_lines(results: dict) -> list[str]:
    """What a command prints of a run's results: the image AUROC, and for patch models the pixel metrics; an
    undefined number is said in words."""
    auroc = results.get("image_auroc")
    lines = [
        f"image AUROC: {auroc:.4f}"
        if auroc is not None
        else f"image AUROC: {results.get('image_auroc_undefined', 'undefined')}"
    ]
    if "pixel_auroc" in results:
        pixel = [
            f"{name}: {results[key]:.4f}"
            if results.get(key) is not None
            else f"{name}: {results.get(key + '_undefined', 'undefined')}"
            for key, name in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AUPRO (FPR <= 0.3)"))
        ]
        lines.append(", ".join(pixel))
    return lines


def write_results(results: dict, workdir: str) -> str:
    """``results.json``: strict JSON (an undefined number is null with ``KEY_undefined`` saying why), whole."""
    return atomic.write_json(os.path.join(workdir, "results.json"), results, sort_keys=True)


def write_timing(timing: dict, workdir: str) -> str:
    """Wall times and resume point, added to ``timing.json``: what varies between runs of the same command
    (kept out of results.json)."""
    path = os.path.join(workdir, "timing.json")
    return atomic.write_json(path, {**read_json(path), **timing}, sort_keys=True)


@contextlib.contextmanager
def run_log(workdir: str, *, name: str = "metrics.jsonl", resumed_from: int = 0, writers=()):
    """Yields the ``log`` callable of :func:`sla_jax.training.loop.fit`: each record becomes one line of
    ``WORKDIR/NAME`` (trimmed to ``resumed_from`` first, see :func:`trim_log`) and, with TensorBoard
    ``writers`` (:func:`sla_jax.outputs.board.open_writers`), scalars at the record's step."""
    path = os.path.join(workdir, name)
    trim_log(path, up_to_step=resumed_from)
    with open(path, "a", encoding="utf-8") as f:

        def log(record: dict) -> None:
            f.write(atomic.dumps(record) + "\n")
            f.flush()
            if writers:
                board.log_record(writers, record)

        yield log


def trim_log(path: str, *, up_to_step: int) -> None:
    """Keep only the records of ``metrics.jsonl`` up to ``up_to_step`` (the checkpoint a run resumes from):
    the steps a stopped run logged after its last checkpoint are trained again, and logged once. A line cut
    short by a kill is dropped."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if int(json.loads(line)["step"]) <= up_to_step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
    atomic.write_text(path, "".join(kept))


def write_scores_csv(scores: np.ndarray, split, path: str, *, checkpoint_step: int) -> None:
    """One row per test image with the checkpoint step whose model scored it."""
    with atomic.replacing(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "defect_type", "label", "score", "checkpoint_step"])
        for p, t, y, s in zip(split.paths, split.defect_types, split.labels, scores):
            writer.writerow([atomic.printable(p), t, int(y), f"{float(s):.6g}", int(checkpoint_step)])


def read_scores(path: str, *, with_paths: bool = False) -> tuple:
    """(scores, labels, defect types) from a run's ``scores.csv``, and the image paths ``with_paths``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = (
        np.asarray([float(r["score"]) for r in rows]),
        np.asarray([int(r["label"]) for r in rows]),
        [r["defect_type"] for r in rows],
    )
    return (*columns, [r["path"] for r in rows]) if with_paths else columns


def density_file(kind: str) -> str:
    """The file a run's fitted density ``kind`` is saved in: ``gde.npz``, ``kde.npz``, ``NAME.npz``."""
    return f"{kind}.npz"


def write_density(workdir: str, fitted, *, kind: str, threshold: float, checkpoint_step: int) -> str:
    """The fitted density, the decision threshold and the checkpoint step whose features it was fitted on:
    ``gde.npz`` (mean, precision, covariance, shrinkage) or ``kde.npz`` (the training features and γ)."""
    return atomic.save_npz(
        os.path.join(workdir, density_file(kind)),
        threshold=np.float64(threshold),
        checkpoint_step=np.int64(checkpoint_step),
        **{k: np.asarray(v) for k, v in fitted._asdict().items()},
    )


def read_density(workdir: str, *, kind: str, fields) -> tuple[dict, float, int | None]:
    """(the arrays named ``fields``, the threshold, the checkpoint step it was fitted on, None for a file of an
    older version) of a run's density file; FileNotFoundError says what to run."""
    path = os.path.join(workdir, density_file(kind))
    refit = f"run `python -m sla_jax.evaluate --workdir={workdir}` to refit it on the newest checkpoint"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {refit}")
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
    except (ValueError, OSError) as error:
        raise FileNotFoundError(f"{path} cannot be read ({type(error).__name__}: {error}): {refit}") from None
    missing = [k for k in ("threshold", *fields) if k not in arrays]
    if missing:
        raise FileNotFoundError(f"{path} has no {', '.join(missing)} (written by an older version): {refit}")
    step = int(arrays["checkpoint_step"]) if "checkpoint_step" in arrays else None
    return {k: arrays[k] for k in fields}, float(arrays["threshold"]), step


def write_maps(path: str, *, maps: np.ndarray, scores_low: np.ndarray, masks: np.ndarray, paths) -> None:
    """Defect maps, the patch scores before upsampling, the masks and the image paths (``maps.npz``)."""
    atomic.save_npz(
        path,
        compressed=True,
        maps=maps.astype(np.float32),
        scores_low=scores_low,
        masks=masks,
        paths=np.asarray([atomic.printable(p) for p in paths]),
    )


def write_predictions(records: list[dict], out_dir: str) -> None:
    """``predictions.jsonl`` and ``predictions.csv``, one line per scored or skipped file."""
    atomic.write_text(os.path.join(out_dir, "predictions.jsonl"), "".join(atomic.dumps(r) + "\n" for r in records))
    with atomic.replacing(os.path.join(out_dir, "predictions.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "threshold", "decision", "heatmap", "error"])
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def write_sweep(rows: list[dict], workdir: str, *, title: str, note: str) -> None:
    """alpha_sweep.json, alpha_sweep.md (table) and alpha_sweep.png (AUROC against α, seed spread); patch
    models' rows add the pixel AUROC and AUPRO over seeds."""
    atomic.write_json(os.path.join(workdir, "alpha_sweep.json"), {"title": title, "note": note, "rows": rows})
    pixel = any("pixel_auroc_mean" in r for r in rows)
    extra = " pixel AUROC mean ± std | AUPRO mean ± std |" if pixel else ""
    lines = [
        f"# {title}",
        "",
        note,
        "",
        f"| labels | α | ε | seeds | image AUROC mean | std | min | max | per seed |{extra}",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |" + (" ---: | ---: |" if pixel else ""),
    ]

    def value(v) -> str:
        return "undefined" if v is None else f"{v:.4f}"

    for r in rows:
        alpha = "–" if r["alpha"] is None else f"{r['alpha']:g}"
        eps = "–" if r["epsilon"] is None else f"{r['epsilon']:g}"
        per_seed = ", ".join(value(v) for v in r["image_auroc"])
        line = (
            f"| {r['labels']} | {alpha} | {eps} | {len(r['seeds'])} | {value(r['mean'])} | {value(r['std'])} "
            f"| {value(r['min'])} | {value(r['max'])} | {per_seed} |"
        )
        for metric in ("pixel_auroc", "pixel_aupro") if pixel else ():
            line += f" {value(r.get(metric + '_mean'))} ± {value(r.get(metric + '_std'))} |"
        lines.append(line)
    atomic.write_text(os.path.join(workdir, "alpha_sweep.md"), "\n".join(lines) + "\n")
    study_plots.plot_sweep(rows, os.path.join(workdir, "alpha_sweep.png"), title=title)


def analysis_table(results: dict) -> str:
    every = results["every"]
    lines = [
        f"Invalid edits (soft label < {results['threshold']}, α = {results['alpha']}, ε = {results['epsilon']}), "
        f"{results['trials']} trials per transform on {results['images_per_dataset']} training image(s) per "
        f"dataset at {results['image_size']} px.",
        "",
        f"| dataset | transform | invalid | fraction | unchanged (y = 0) | mean y | cumulative every {every} |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for dataset, entry in results["datasets"].items():
        for name, r in entry["transforms"].items():
            lines.append(
                f"| {dataset} | {name.upper()} | {r['invalid']} | {r['invalid_fraction']:.1%} | "
                f"{r['exactly_unchanged']} | {r['mean_label']:.3f} | "
                f"{', '.join(map(str, r['cumulative_invalid']))} |"
            )
    return "\n".join(lines) + "\n"


def write_analysis(results: dict, out_dir: str) -> None:
    """analysis.json, analysis.md (table) and analysis.png of ``python -m sla_jax.analyze``."""
    atomic.write_json(os.path.join(out_dir, "analysis.json"), results)
    atomic.write_text(os.path.join(out_dir, "analysis.md"), analysis_table(results))
    study_plots.plot_analysis(
        results, os.path.join(out_dir, "analysis.png"), every=results["every"], threshold=results["threshold"]
    )
