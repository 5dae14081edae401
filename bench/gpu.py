"""GPU training throughput of sla_jax's real step (edit, soft labels, update in one jitted program).

For a session lent an accelerator (the ``device`` tool): at 256 px, batch 64 and 256, float32 and
bfloat16 compute (``model.dtype``), the median step time after warm-up, network images/s, achieved
TFLOP/s (XLA's cost analysis of the compiled step) and peak device memory; then one longer run of
``--long_steps`` steps at batch 64 in the faster dtype, its steady rate extrapolated to one paper-length
category (65,536 steps of 64). Prints a table, writes JSON. Runs on any backend; on a CPU use small
sizes (``--size 64 --batches 8 --steps 3 --long_steps 5``) to check the script itself.

    python bench/gpu.py [--size 256] [--batches 64,256] [--dtypes float32,bfloat16] [--steps 30]
        [--long_steps 300] [--transform cps] [--out bench/gpu.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

PAPER_STEPS = 256 * 256


def build(*, size: int, batch: int, dtype: str, transform: str):
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax import pretext
    from sla_jax.models import PretextNet
    from sla_jax.state import data_mesh, init_state

    model = PretextNet(num_classes=2 if transform != "cpf" else 3, head=common.PAPER_HEAD, dtype=jnp.dtype(dtype))
    optimizer = common.sla_jax_optimizer(total_steps=PAPER_STEPS)
    spec = pretext.StepSpec(batch_size=batch, transform=transform)
    mesh = data_mesh()
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (256, size, size, 3), dtype=np.uint8))
    step = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    hparams = pretext.HParams.create()
    key = jax.random.key(1)
    compiled = step.lower(state, images, key, hparams).compile()
    return compiled, state, images, key, hparams, common.flops(compiled)


def peak_device_gb() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**30 if peak else None


def measure(*, size: int, batch: int, dtype: str, transform: str, steps: int) -> dict:
    compiled, state, images, key, hparams, flops = build(size=size, batch=batch, dtype=dtype, transform=transform)
    holder = {"state": state}

    def once():
        holder["state"], metrics = compiled(holder["state"], images, key, hparams)
        metrics["loss"].block_until_ready()

    seconds, times = common.median_seconds(once, repeats=steps, warmup=3)
    return {"size": size, "batch": batch, "dtype": dtype, "seconds_per_step": seconds, "images_per_s": batch / seconds,
            "tflops": flops / seconds / 1e12, "flops_per_step": flops, "peak_device_gb": peak_device_gb(),
            "times": times}


def long_run(*, size: int, batch: int, dtype: str, transform: str, steps: int) -> dict:
    """``steps`` steps back to back (the host loop as in training: dispatch, no sync until the end)."""
    compiled, state, images, key, hparams, _ = build(size=size, batch=batch, dtype=dtype, transform=transform)
    for _ in range(3):
        state, metrics = compiled(state, images, key, hparams)
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, images, key, hparams)
    float(metrics["loss"])
    seconds = time.perf_counter() - start
    per_step = seconds / steps
    return {"size": size, "batch": batch, "dtype": dtype, "steps": steps, "seconds": seconds,
            "images_per_s": batch * steps / seconds, "paper_category_hours": PAPER_STEPS * per_step / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting")
    parser.add_argument("--long_steps", type=int, default=300, help="steps of the extrapolated run (0: skip)")
    parser.add_argument("--transform", default="cps")
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "gpu.json"))
    args = parser.parse_args()

    import jax

    print(f"devices: {jax.devices()}", flush=True)
    rows = []
    for dtype in args.dtypes.split(","):
        for batch in map(int, args.batches.split(",")):
            print(f"{args.size} px, batch {batch}, {dtype} ...", flush=True)
            rows.append(measure(size=args.size, batch=batch, dtype=dtype, transform=args.transform, steps=args.steps))
    print(common.table(rows, [("size", "px", ""), ("batch", "batch", ""), ("dtype", "dtype", ""),
                              ("seconds_per_step", "s/step", ".4f"), ("images_per_s", "images/s", ".0f"),
                              ("tflops", "TFLOP/s", ".1f"), ("peak_device_gb", "peak device GB", ".1f")]))
    record = {"rows": rows, "transform": args.transform, "devices": [str(d) for d in jax.devices()],
              "backend": jax.default_backend(), "jax": jax.__version__, "machine": common.machine(),
              "command": " ".join(sys.argv)}
    if args.long_steps:
        fastest = min([r for r in rows if r["batch"] == 64] or rows, key=lambda r: r["seconds_per_step"])
        print(f"long run: {args.long_steps} steps of 64 in {fastest['dtype']} ...", flush=True)
        record["long_run"] = long_run(size=args.size, batch=64, dtype=fastest["dtype"], transform=args.transform,
                                      steps=args.long_steps)
        lr = record["long_run"]
        print(f"{lr['steps']} steps in {lr['seconds']:.1f} s = {lr['images_per_s']:.0f} images/s; one paper-length "
              f"category ({PAPER_STEPS} steps of 64) ≈ {lr['paper_category_hours']:.2f} h")
    common.write_json(args.out, record)


if __name__ == "__main__":
    main()
