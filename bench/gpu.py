"""GPU throughput of sla_jax: the real training step, a vmapped ensemble and dense localization, in one script.

For a GPU owner (about 10 minutes on one GPU): at 256 px, batch 64 and 256, float32 and bfloat16 compute
(``model.dtype``), the median step time of the real step (edit, soft labels, update in one jitted
program) after warm-up, network images/s, achieved TFLOP/s (FLOPs counted from the step's convolutions and
matrix products, ``sla_jax.training.flops``: XLA's cost analysis does not see cuDNN's convolutions), utilisation
against the device's matrix rate measured by an n×n product in the same dtype (``--matmul_n``), and peak
device memory; a ``--members``-member vmapped ensemble (one program, an α grid) at batch 64 in
the faster dtype; dense localization (every 32 px patch at stride 4 of a 256 px image embedded, scored
by a Gaussian, receptive-field upsampled) in images/s; then one longer run of ``--long_steps`` steps at
batch 64, its steady rate extrapolated to one paper-length category (65,536 steps of 64). Prints markdown
tables, writes JSON and markdown. Runs on any backend; on a CPU use small sizes (``--size 64 --batches 8
--steps 3 --long_steps 5 --members 2 --matmul_n 1024``) to check the script itself. ``--per_call 1,4``
adds rows with 4 steps per dispatch (``train.steps_per_call``): whether that pays at batch 64 on a GPU.

    python bench/gpu.py [--size 256] [--batches 64,256] [--dtypes float32,bfloat16] [--steps 30]
        [--members 7] [--long_steps 300] [--transform cps] [--matmul_n 8192] [--per_call 1,4]
        [--out bench/gpu.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

PAPER_STEPS = 256 * 256


def build(*, size: int, batch: int, dtype: str, transform: str, per_call: int = 1):
    """The compiled step (``per_call`` > 1: that many steps in one program, as ``train.steps_per_call``), its
    inputs and the FLOPs of one step."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax.training import flops, pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh, init_state

    model = PretextNet(num_classes=2 if transform != "cpf" else 3, head=common.PAPER_HEAD, dtype=jnp.dtype(dtype))
    optimizer = common.sla_jax_optimizer(total_steps=PAPER_STEPS)
    spec = pretext.StepSpec(batch_size=batch, transform=transform)
    mesh = data_mesh()
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (256, size, size, 3), dtype=np.uint8))
    step = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    hparams = pretext.HParams.create()
    key = jax.random.key(1)
    program = (
        step
        if per_call == 1
        else pretext.compile_train_steps(model=model, optimizer=optimizer, spec=spec, mesh=mesh, steps=per_call)
    )
    compiled = program.lower(state, images, key, hparams).compile()
    return compiled, state, images, key, hparams, flops.count(step, state, images, key, hparams)


def peak_device_gb() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**30 if peak else None


def matmul_rate(*, dtype: str, n: int, repeats: int = 10) -> float:
    """The device's measured matrix rate in FLOP/s: an n×n by n×n product in ``dtype``, median of ``repeats``
    (the reference for utilisation: what this chip does at best on the work that dominates a ResNet)."""
    import jax
    import jax.numpy as jnp

    a = jax.device_put(jnp.ones((n, n), jnp.dtype(dtype)))
    product = jax.jit(lambda x: x @ x)
    seconds, _ = common.median_seconds(lambda: product(a).block_until_ready(), repeats=repeats, warmup=2)
    return 2 * n**3 / seconds


def measure(*, size: int, batch: int, dtype: str, transform: str, steps: int, per_call: int = 1) -> dict:
    """The median seconds per step of ``steps`` timed calls (each ``per_call`` steps) after warm-up."""
    compiled, state, images, key, hparams, flops = build(
        size=size, batch=batch, dtype=dtype, transform=transform, per_call=per_call
    )
    holder = {"state": state}

    def once():
        holder["state"], _ = compiled(holder["state"], images, key, hparams)
        holder["state"].step.block_until_ready()

    seconds, times = common.median_seconds(once, repeats=steps, warmup=3)
    seconds /= per_call
    return {
        "size": size,
        "batch": batch,
        "dtype": dtype,
        "steps_per_call": per_call,
        "seconds_per_step": seconds,
        "images_per_s": batch / seconds,
        "tflops": flops / seconds / 1e12,
        "flops_per_step": flops,
        "flops_counted_by": "sla_jax.training.flops (jaxpr)",
        "peak_device_gb": peak_device_gb(),
        "times": times,
    }


def ensemble_run(*, size: int, batch: int, dtype: str, transform: str, members: int, steps: int) -> dict:
    """``members`` members (α = 1, 2, 5, ... and seeds) trained by one vmapped, jitted step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax.training import ensemble, pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh

    model = PretextNet(num_classes=2 if transform != "cpf" else 3, head=common.PAPER_HEAD, dtype=jnp.dtype(dtype))
    optimizer = common.sla_jax_optimizer(total_steps=PAPER_STEPS)
    spec = pretext.StepSpec(batch_size=batch, transform=transform)
    grid = [
        ensemble.Member(seed=k, alpha=float(a), epsilon=0.02, mode="soft")
        for k, a in enumerate(([1, 2, 5, 7, 10, 15, 20] * members)[:members])
    ]
    hparams = ensemble.stack_hparams(grid)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in grid)))
    states = ensemble.init_ensemble(init_keys, hparams, model=model, optimizer=optimizer, image_size=size)
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (256, size, size, 3), dtype=np.uint8))
    step = ensemble.compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=data_mesh())
    data_key = ensemble.member_keys(0)[1]
    holder = {"states": states}

    def once():
        holder["states"], metrics = step(holder["states"], images, step_keys, hparams, data_key)
        metrics["loss"].block_until_ready()

    seconds, _ = common.median_seconds(once, repeats=steps, warmup=2)
    return {
        "members": members,
        "size": size,
        "batch": batch,
        "dtype": dtype,
        "seconds_per_step": seconds,
        "images_per_s": members * batch / seconds,
        "peak_device_gb": peak_device_gb(),
    }


def localization_run(*, size: int, repeats: int) -> dict:
    """Dense localization of one ``size`` px image: 32 px patches at stride 4 (3,249 at 256 px) through the
    small-stem backbone, Gaussian scores, receptive-field upsampling (``bench/localization.py``'s measurement)."""
    from bench.localization import bench_stem

    measured = bench_stem("small", image_size=size, repeats=repeats, batch_size=1024)
    return {**measured, "peak_device_gb": peak_device_gb()}


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
    return {
        "size": size,
        "batch": batch,
        "dtype": dtype,
        "steps": steps,
        "seconds": seconds,
        "images_per_s": batch * steps / seconds,
        "paper_category_hours": PAPER_STEPS * per_step / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting")
    parser.add_argument("--long_steps", type=int, default=300, help="steps of the extrapolated run (0: skip)")
    parser.add_argument("--members", type=int, default=7, help="members of the vmapped ensemble (0: skip)")
    parser.add_argument("--loc_repeats", type=int, default=3, help="timed dense-localization images (0: skip)")
    parser.add_argument("--transform", default="cps")
    parser.add_argument(
        "--matmul_n",
        type=int,
        default=8192,
        help="side of the matrix product that measures the device's matrix rate (the utilisation reference; 0: skip)",
    )
    parser.add_argument(
        "--per_call",
        default="1",
        help="comma-separated steps per dispatch (train.steps_per_call): each batch and dtype once per value",
    )
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "gpu.json"))
    args = parser.parse_args()

    import jax

    print(f"devices: {jax.devices()}", flush=True)
    rows = []
    for dtype in args.dtypes.split(","):
        for batch in map(int, args.batches.split(",")):
            for per_call in map(int, args.per_call.split(",")):
                print(f"{args.size} px, batch {batch}, {dtype}, {per_call} step(s) per call ...", flush=True)
                rows.append(
                    measure(
                        size=args.size,
                        batch=batch,
                        dtype=dtype,
                        transform=args.transform,
                        steps=args.steps,
                        per_call=per_call,
                    )
                )
    rates = {}
    if args.matmul_n:
        for dtype in args.dtypes.split(","):
            rates[dtype] = matmul_rate(dtype=dtype, n=args.matmul_n)
            print(f"matrix rate, {dtype}, {args.matmul_n}²: {rates[dtype] / 1e12:.1f} TFLOP/s", flush=True)
    for row in rows:
        if row["dtype"] in rates:
            row["matmul_tflops"] = rates[row["dtype"]] / 1e12
            row["utilisation"] = row["tflops"] / row["matmul_tflops"]
    columns = [
        ("size", "px", ""),
        ("batch", "batch", ""),
        ("dtype", "dtype", ""),
        ("steps_per_call", "steps per call", ""),
        ("seconds_per_step", "s/step", ".4f"),
        ("images_per_s", "images/s", ".0f"),
        ("tflops", "TFLOP/s (counted)", ".2f"),
        ("matmul_tflops", "matrix rate TFLOP/s", ".2f"),
        ("utilisation", "of the matrix rate", ".0%"),
        ("peak_device_gb", "peak device GB", ".1f"),
    ]
    tables = ["## Training step", "", common.table(rows, columns)]
    print(tables[-1])
    record = {
        "rows": rows,
        "transform": args.transform,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "machine": common.machine(),
        "command": " ".join(sys.argv),
    }
    fastest = min([r for r in rows if r["batch"] == 64] or rows, key=lambda r: r["seconds_per_step"])
    if args.members:
        print(f"ensemble: {args.members} members, batch 64, {fastest['dtype']} ...", flush=True)
        record["ensemble"] = ensemble_run(
            size=args.size,
            batch=64,
            dtype=fastest["dtype"],
            transform=args.transform,
            members=args.members,
            steps=max(3, args.steps // 3),
        )
        tables += [
            "",
            "## Vmapped ensemble",
            "",
            common.table(
                [record["ensemble"]],
                [
                    ("members", "members", ""),
                    ("batch", "batch per member", ""),
                    ("dtype", "dtype", ""),
                    ("seconds_per_step", "s/step", ".4f"),
                    ("images_per_s", "images/s (all members)", ".0f"),
                    ("peak_device_gb", "peak device GB", ".1f"),
                ],
            ),
        ]
        print(tables[-1])
    if args.loc_repeats:
        print("dense localization ...", flush=True)
        record["localization"] = localization_run(size=args.size, repeats=args.loc_repeats)
        tables += [
            "",
            "## Dense localization",
            "",
            common.table(
                [record["localization"]],
                [
                    ("image_size", "px", ""),
                    ("patches", "patches per image", ""),
                    ("images_per_s", "images/s", ".2f"),
                    ("patches_per_s", "patches/s", ".0f"),
                    ("peak_device_gb", "peak device GB", ".1f"),
                ],
            ),
        ]
        print(tables[-1])
    if args.long_steps:
        print(f"long run: {args.long_steps} steps of 64 in {fastest['dtype']} ...", flush=True)
        record["long_run"] = long_run(
            size=args.size, batch=64, dtype=fastest["dtype"], transform=args.transform, steps=args.long_steps
        )
        lr = record["long_run"]
        line = (
            f"{lr['steps']} steps in {lr['seconds']:.1f} s = {lr['images_per_s']:.0f} images/s; one paper-length "
            f"category ({PAPER_STEPS} steps of 64) ≈ {lr['paper_category_hours']:.2f} h"
        )
        tables += ["", "## Long run", "", line]
        print(line)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(f"# bench/gpu.py on {record['devices'][0]}\n\n`{record['command']}`\n\n" + "\n".join(tables) + "\n")
    common.write_json(args.out, record)


if __name__ == "__main__":
    main()
