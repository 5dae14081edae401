"""One run of the PyTorch CutPaste port (Runinho/pytorch-cutpaste), driven through its own functions.

Run by ``bench/peer_cutpaste.py`` under the port's own Python (a scratch venv with torch and torchvision),
never imported by sla_jax: this file imports only the standard library until it loads the port from
``--peer_src``. The port is used as it is; the wrappers here only give it what its command line hard-codes:

- an image size and a data root: its ``MVTecAT`` reads ``Data/CATEGORY`` relative to the working directory
  and only ``*.png``, so the run's scratch folder gets ``Data/CATEGORY`` as a view of the MVTec-layout
  folder, one symlink per image named ``<name>.png`` (PIL reads JPEG by content, whatever the name);
- seeds: it seeds nothing, so ``random``, NumPy and torch are seeded here (its DataLoader workers derive
  their seeds from torch's);
- the evaluation at the size it trained at, with training's ``head_layer`` (its ``eval.py`` defaults to 8)
  and no plots; ``test_epochs=0`` keeps it from scoring the test set during training.

Training accuracy, loss and their wall-clock times come from the TensorBoard events it writes each step.
Each test image's score (the port's Mahalanobis distance) goes to ``RUN_DIR/scores.csv`` in sla_jax's
``scores.csv`` columns, keyed by the original file, so two runs can be compared image by image.
``--model`` scores a saved model of an earlier run without training. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_view(category_dir: Path, view_dir: Path) -> dict:
    """``view_dir`` mirrors ``train/good`` and ``test/*`` of ``category_dir`` with ``.png``-named symlinks."""
    counts = {}
    for split_dir in [category_dir / "train" / "good", *sorted((category_dir / "test").iterdir())]:
        if not split_dir.is_dir():
            continue
        target = view_dir / split_dir.relative_to(category_dir)
        target.mkdir(parents=True, exist_ok=True)
        files = sorted(
            p for p in split_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        for i, path in enumerate(files):
            (target / f"{i:05d}_{path.stem}.png").symlink_to(path.resolve())
        counts[str(split_dir.relative_to(category_dir))] = len(files)
    return counts


def window_means(events, *, at_steps, window: int) -> dict:
    """Mean of a per-step scalar over the ``window`` steps ending at each step in ``at_steps`` (1-based)."""
    by_step = {e.step + 1: e.value for e in events}
    out = {}
    for step in at_steps:
        values = [by_step[s] for s in range(step - window + 1, step + 1) if s in by_step]
        out[str(step)] = sum(values) / len(values) if values else None
    return out


def write_scores(image_names, scores, path: Path) -> None:
    """``path,defect_type,label,score`` per test image, the path resolved through the ``.png`` view."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "defect_type", "label", "score"])
        for name, score in zip(image_names, scores):
            defect_type = Path(name).parent.name
            writer.writerow([str(Path(name).resolve()), defect_type, int(defect_type != "good"), repr(float(score))])


class RecordingDensity:
    """The port's ``GaussianDensityTorch`` that keeps the scores ``eval_model`` computes."""

    def __init__(self, density):
        self.density, self.scores = density, None

    def fit(self, embeddings):
        return self.density.fit(embeddings)

    def predict(self, embeddings):
        self.scores = self.density.predict(embeddings)
        return self.scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer_src", required=True, help="checkout of Runinho/pytorch-cutpaste")
    parser.add_argument("--category_dir", required=True, help="ROOT/CATEGORY in MVTec AD layout")
    parser.add_argument("--run_dir", required=True, help="scratch folder of this run (created)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--batch", type=int, default=32, help="originals per step (as many scars are added)")
    parser.add_argument("--head_layer", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--at_steps", default="250,500,750")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--model", default="", help="a saved model (.tch) to score; skips training")
    args = parser.parse_args()

    started = time.perf_counter()
    model = Path(args.model).resolve() if args.model else None
    category_dir = Path(args.category_dir).resolve()
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    counts = image_view(category_dir, run_dir / "Data" / category_dir.name)
    os.chdir(run_dir)  # the port reads Data/ and writes logdirs/ relative to the working directory
    sys.path.insert(0, str(Path(args.peer_src).resolve()))

    import random

    import cutpaste
    import density
    import eval as port_eval
    import numpy as np
    import run_training
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    if model:
        auroc = evaluate(args, port_eval, density, model, category_dir.name, run_dir)
        print(
            json.dumps(
                {
                    "impl": "pytorch-cutpaste",
                    "category": category_dir.name,
                    "model": str(model),
                    "size": args.size,
                    "images": counts,
                    "image_auroc": auroc,
                    "seconds": time.perf_counter() - started,
                }
            ),
            flush=True,
        )
        return
    model_dir = run_dir / "models"
    model_dir.mkdir(exist_ok=True)
    train_start, train_start_wall = time.perf_counter(), time.time()
    run_training.run_training(
        category_dir.name,
        model_dir=model_dir,
        epochs=args.steps,
        pretrained=False,
        test_epochs=0,
        freeze_resnet=0,
        learninig_rate=0.03,
        optim_name="sgd",
        batch_size=args.batch,
        head_layer=args.head_layer,
        cutpate_type=cutpaste.CutPasteScar,
        device="cpu",
        workers=args.workers,
        size=args.size,
    )
    train_seconds = time.perf_counter() - train_start
    (model_path,) = model_dir.glob(f"model-{category_dir.name}-*.tch")

    eval_start = time.perf_counter()
    auroc = evaluate(args, port_eval, density, model_path, category_dir.name, run_dir)
    eval_seconds = time.perf_counter() - eval_start

    (logdir,) = (run_dir / "logdirs").iterdir()
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    acc, loss = events.Scalars("acc"), events.Scalars("loss")
    at_steps = [int(s) for s in args.at_steps.split(",") if int(s) <= args.steps]
    wall_at = {str(s): next((e.wall_time for e in acc if e.step + 1 == s), None) for s in at_steps}
    print(
        json.dumps(
            {
                "impl": "pytorch-cutpaste",
                "category": category_dir.name,
                "seed": args.seed,
                "size": args.size,
                "steps": args.steps,
                "batch": args.batch,
                "workers": args.workers,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "images": counts,
                "image_auroc": float(auroc),
                "accuracy": window_means(acc, at_steps=at_steps, window=args.window),
                "loss": window_means(loss, at_steps=at_steps, window=args.window),
                # wall seconds from the start of training (run_training called) to the end of each step
                "train_seconds_at": {s: None if w is None else w - train_start_wall for s, w in wall_at.items()},
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                "seconds": time.perf_counter() - started,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        ),
        flush=True,
    )


def evaluate(args, port_eval, density, model_path: Path, category: str, run_dir: Path) -> float:
    """The port's ``eval_model`` at the training size and head; writes ``scores.csv``; returns its AUROC."""
    recording = RecordingDensity(density.GaussianDensityTorch())
    auroc = port_eval.eval_model(
        str(model_path),
        category,
        device="cpu",
        save_plots=False,
        size=args.size,
        show_training_data=False,
        head_layer=args.head_layer,
        density=recording,
    )
    write_scores(port_eval.test_data_eval.image_names, recording.scores.tolist(), run_dir / "scores.csv")
    return float(auroc)


if __name__ == "__main__":
    main()
