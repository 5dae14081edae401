"""Scoring speed of an exported detector in onnxruntime against sla_jax.predict's JAX path, on the CPU.

Trains a one-step image model and a one-step patch model (the paper's 32 px patches at stride 4) at
``--size`` on the demo data, exports both (``python -m sla_jax.export``) and times, each in its own process
and in alternating rounds, the scoring of a batch of images: ``jax`` is the Detector of
``sla_jax.experiment.load_detector`` (what ``python -m sla_jax.predict`` calls, compiled before timing),
``onnxruntime`` the OnnxDetector of ``python -m sla_jax.run_onnx``. Images/s (median of the rounds), peak
RSS. Prints a markdown table, writes JSON.

    python bench/onnx.py [--size 256] [--batch 8] [--patch_batch 2] [--rounds 3] [--threads 0] [--models image,patch]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def worker(runner: str, workdir: str, model: str, batch: int, repeats: int, threads: int) -> dict:
    import numpy as np

    from sla_jax.data import collect_files, read_image

    if runner == "jax":
        from sla_jax import experiment

        detector = experiment.load_detector(workdir)
    else:
        from sla_jax.scoring.inspection import OnnxDetector

        detector = OnnxDetector(model, threads=threads)
    files, _ = collect_files([os.path.join(workdir, "demo_data")])
    images = np.stack([read_image(p, size=detector.image_size) for p in files[:batch]])
    seconds, times = common.median_seconds(lambda: detector.score(images), repeats=repeats, warmup=1)
    return {
        "seconds_per_batch": seconds,
        "times": times,
        "images_per_s": batch / seconds,
        "peak_rss_gb": common.peak_rss_gb(),
    }


def train_and_export(scratch: str, name: str, size: int, extra: list[str]) -> tuple[str, str]:
    workdir, model = os.path.join(scratch, name), os.path.join(scratch, f"{name}.onnx")
    config = "configs/demo_patch.py" if "patch" in name else "configs/demo.py"
    for command in (
        [
            sys.executable,
            "-m",
            "sla_jax.train",
            f"--config={config}",
            f"--workdir={workdir}",
            f"--config.data.image_size={size}",
            "--config.train.steps=1",
            "--config.train.batch_size=8",
            "--config.eval.threshold_images=2",
            *extra,
        ],
        [sys.executable, "-m", "sla_jax.export", f"--workdir={workdir}", f"--out={model}"],
    ):
        done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return workdir, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="images per timed batch, image model")
    parser.add_argument("--patch_batch", type=int, default=2, help="images per timed batch, patch model")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per measurement (after 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--models", default="image,patch", help="which of the two models to train and time")
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "onnx.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runner, workdir, model, *numbers = args.worker
        common.emit(worker(runner, workdir, model, *map(int, numbers)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        extra = {"image": ["--config.model.head=(512,128)"], "patch": ["--config.localization.train_stride=32"]}
        models = {kind: train_and_export(scratch, kind, args.size, extra[kind]) for kind in args.models.split(",")}
        print(f"trained and exported {', '.join(models)} in {time.perf_counter() - started:.0f} s", flush=True)
        for kind, (workdir, model) in models.items():
            batch = args.batch if kind == "image" else args.patch_batch
            runs = {"jax": [], "onnxruntime": []}
            for round_ in range(args.rounds):
                for runner in runs:
                    print(f"{kind} model, {runner}, round {round_ + 1}/{args.rounds} ...", flush=True)
                    runs[runner].append(
                        common.run_worker(__file__, [runner, workdir, model, batch, args.repeats, args.threads])
                    )
            reference = sorted(m["images_per_s"] for m in runs["jax"])[len(runs["jax"]) // 2]
            for runner, measured in runs.items():
                middle = sorted(measured, key=lambda m: m["images_per_s"])[len(measured) // 2]
                rows.append(
                    {
                        "model": kind,
                        "runner": runner,
                        "batch": batch,
                        **middle,
                        "round_images_per_s": [m["images_per_s"] for m in measured],
                        "vs_jax": middle["images_per_s"] / reference,
                    }
                )
    columns = [
        ("model", "model", ""),
        ("runner", "runner", ""),
        ("batch", "batch", ""),
        ("images_per_s", "images/s", ".2f"),
        ("vs_jax", "× JAX", ".2f"),
        ("peak_rss_gb", "peak RSS GB", ".2f"),
    ]
    print(common.table(rows, columns))
    common.write_json(
        args.out,
        {
            "rows": rows,
            "size": args.size,
            "machine": common.machine(),
            "command": " ".join(["python bench/onnx.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()
