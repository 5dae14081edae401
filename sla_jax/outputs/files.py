"""Every file a run writes besides checkpoints and figures: results.json, timing.json, scores.csv, the fitted
density, the defect maps, predictions, the α-sweep tables, the invalid-edit analysis; and their readers."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from sla_jax.outputs import plots

def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def summary_lines(results: dict) -> list[str]:
    """What a command prints of a run's results: the image AUROC, and for patch models the pixel metrics."""
    lines = [f"image AUROC: {results['image_auroc']:.4f}"]
    if "pixel_auroc" in results:
        lines.append(f"pixel AUROC: {results['pixel_auroc']:.4f}, AUPRO (FPR <= 0.3): {results['pixel_aupro']:.4f}")
    return lines


def write_results(results: dict, workdir: str) -> str:
    path = os.path.join(workdir, "results.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return path


def write_timing(timing: dict, workdir: str) -> str:
    """Wall times and resume point, added to ``timing.json``: what varies between runs of the same command
    (kept out of results.json)."""
    path = os.path.join(workdir, "timing.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            timing = {**json.load(f), **timing}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(timing, f, indent=2, sort_keys=True)
    return path


def write_scores_csv(scores: np.ndarray, split, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "defect_type", "label", "score"])
        for p, t, y, s in zip(split.paths, split.defect_types, split.labels, scores):
            writer.writerow([p, t, int(y), f"{float(s):.6g}"])


def read_scores(path: str, *, with_paths: bool = False) -> tuple:
    """(scores, labels, defect types) from a run's ``scores.csv``, and the image paths ``with_paths``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = (np.asarray([float(r["score"]) for r in rows]), np.asarray([int(r["label"]) for r in rows]),
               [r["defect_type"] for r in rows])
    return (*columns, [r["path"] for r in rows]) if with_paths else columns


DENSITY_FILES = {"gde": "gde.npz", "kde": "kde.npz"}


def write_density(workdir: str, fitted, *, kind: str, threshold: float) -> str:
    """The fitted density and the decision threshold: ``gde.npz`` (mean, precision, covariance, shrinkage)
    or ``kde.npz`` (the training features and γ). Returns the path."""
    path = os.path.join(workdir, DENSITY_FILES[kind])
    np.savez(path, threshold=np.float64(threshold), **{k: np.asarray(v) for k, v in fitted._asdict().items()})
    return path


def read_density(workdir: str, *, kind: str, fields) -> tuple[dict, float]:
    """(the arrays named ``fields``, the threshold) of a run's density file; FileNotFoundError says what to run."""
    path = os.path.join(workdir, DENSITY_FILES[kind])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `python -m sla_jax.evaluate --workdir={workdir}` first")
    with np.load(path, allow_pickle=False) as saved:
        if "threshold" not in saved:
            raise FileNotFoundError(f"{path} has no decision threshold (written by an older version): run "
                                    f"`python -m sla_jax.evaluate --workdir={workdir}` to refit and store it")
        return {k: saved[k] for k in fields}, float(saved["threshold"])


def write_maps(path: str, *, maps: np.ndarray, scores_low: np.ndarray, masks: np.ndarray, paths) -> None:
    """Defect maps, the patch scores before upsampling, the masks and the image paths (``maps.npz``)."""
    np.savez_compressed(path, maps=maps.astype(np.float32), scores_low=scores_low, masks=masks, paths=np.asarray(paths))


def write_predictions(records: list[dict], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "predictions.jsonl"), "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    with open(os.path.join(out_dir, "predictions.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "threshold", "decision", "heatmap", "error"])
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def write_sweep(rows: list[dict], workdir: str, *, title: str, note: str) -> None:
    """alpha_sweep.json, alpha_sweep.md (table) and alpha_sweep.png (AUROC against α, seed spread)."""
    with open(os.path.join(workdir, "alpha_sweep.json"), "w", encoding="utf-8") as f:
        json.dump({"title": title, "note": note, "rows": rows}, f, indent=2)
    lines = [f"# {title}", "", note, "",
             "| labels | α | ε | seeds | image AUROC mean | std | min | max | per seed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        alpha = "–" if r["alpha"] is None else f"{r['alpha']:g}"
        eps = "–" if r["epsilon"] is None else f"{r['epsilon']:g}"
        per_seed = ", ".join(f"{v:.4f}" for v in r["image_auroc"])
        lines.append(f"| {r['labels']} | {alpha} | {eps} | {len(r['seeds'])} | {r['mean']:.4f} | {r['std']:.4f} "
                     f"| {r['min']:.4f} | {r['max']:.4f} | {per_seed} |")
    with open(os.path.join(workdir, "alpha_sweep.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    plots.plot_sweep(rows, os.path.join(workdir, "alpha_sweep.png"), title=title)


def analysis_table(results: dict) -> str:
    every = results["every"]
    lines = [f"Invalid edits (soft label < {results['threshold']}, α = {results['alpha']}, ε = {results['epsilon']}), "
             f"{results['trials']} trials per transform on {results['images_per_dataset']} training image(s) per "
             f"dataset at {results['image_size']} px.", "",
             "| dataset | transform | invalid | fraction | unchanged (y = 0) | mean y | cumulative every "
             f"{every} |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for dataset, entry in results["datasets"].items():
        for name, r in entry["transforms"].items():
            lines.append(f"| {dataset} | {name.upper()} | {r['invalid']} | {r['invalid_fraction']:.1%} | "
                         f"{r['exactly_unchanged']} | {r['mean_label']:.3f} | "
                         f"{', '.join(map(str, r['cumulative_invalid']))} |")
    return "\n".join(lines) + "\n"


def write_analysis(results: dict, out_dir: str) -> None:
    """analysis.json, analysis.md (table) and analysis.png of ``python -m sla_jax.analyze``."""
    with open(os.path.join(out_dir, "analysis.json"), "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
    with open(os.path.join(out_dir, "analysis.md"), "w", encoding="utf-8") as out:
        out.write(analysis_table(results))
    plots.plot_analysis(results, os.path.join(out_dir, "analysis.png"), every=results["every"],
                        threshold=results["threshold"])
