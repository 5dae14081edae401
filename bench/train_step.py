"""Training step, sla_jax against the same network and optimizer in PyTorch, side by side in one run.

ResNet-18 + CutPaste's head (8 × 512 + 128) + classifier, SGD (momentum 0.9, l2 3e-5 on weights),
cross-entropy against soft targets, one step on a fixed batch of normalised images: no data pipeline
(``bench/pipeline.py`` times that). Every (variant, size) runs in its own process, one after another:
median seconds per step after warm-up, images/s, achieved GFLOP/s (the FLOPs of the compiled sla_jax
step with direct convolutions by XLA's cost analysis, the same count for every variant of a size), the ratio to
PyTorch fp32,
and the process's peak RSS. ``--rounds N`` measures every variant N times, interleaved, and reports
the median round (the machine's speed drifts). Prints a markdown table, writes JSON.

    python bench/train_step.py [--sizes 64,128,256] [--batch 32] [--steps 6] [--rounds 1]
        [--variants jax,jax-xla-defaults,torch,torch-bf16] [--out bench/train_step.json]
    python bench/train_step.py --profile --sizes 128      # where the sla_jax step spends its time

Variants: ``jax`` (sla_jax as shipped: ``conv_impl=auto``, float32, the XLA CPU flags of
``sla_jax.common.runtime``), ``jax-xla-defaults`` (the same without those flags), ``jax-xla`` / ``jax-im2col``
(every convolution one way), ``jax-bf16`` (bfloat16 compute), ``torch`` (float32, ``channels_last``),
``torch-bf16`` (``torch.autocast`` bfloat16).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

VARIANTS = {  # name -> (framework, options, extra environment)
    "jax": ("jax", {"impl": "auto", "dtype": "float32"}, {}),
    "jax-xla-defaults": ("jax", {"impl": "auto", "dtype": "float32"}, {"SLA_JAX_XLA_CPU_DEFAULTS": "0"}),
    "jax-xla": ("jax", {"impl": "xla", "dtype": "float32"}, {}),
    "jax-im2col": ("jax", {"impl": "im2col", "dtype": "float32"}, {}),
    "jax-bf16": ("jax", {"impl": "auto", "dtype": "bfloat16"}, {}),
    "torch": ("torch", {"dtype": "float32"}, {}),
    "torch-bf16": ("torch", {"dtype": "bfloat16"}, {}),
}


def jax_step(*, size: int, batch: int, impl: str, dtype: str):
    """(compiled step, initial state, inputs, targets) of sla_jax's update on a fixed batch."""
    from functools import partial

    import jax
    import jax.numpy as jnp

    from sla_jax.training import pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import init_state

    model = PretextNet(num_classes=2, head=common.PAPER_HEAD, conv_impl=impl, dtype=jnp.dtype(dtype))
    optimizer = common.sla_jax_optimizer()
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    inputs = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    targets = jax.nn.softmax(jax.random.normal(jax.random.key(2), (batch, 2)))

    def step(state, inputs, targets):
        state, loss, _, _ = pretext.apply_gradients(
            state, inputs, lambda params: (targets, None), model=model, optimizer=optimizer
        )
        return state, loss

    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, inputs, targets).compile()
    return compiled, state, inputs, targets


def worker_jax(size: int, batch: int, steps: int, impl: str, dtype: str) -> dict:
    import jax

    compiled, state, inputs, targets = jax_step(size=size, batch=batch, impl=impl, dtype=dtype)
    holder = {"state": state}

    def once():
        holder["state"], loss = compiled(holder["state"], inputs, targets)
        loss.block_until_ready()

    seconds, times = common.median_seconds(once, repeats=steps, warmup=2)
    return {
        "seconds_per_step": seconds,
        "times": times,
        "peak_rss_gb": common.peak_rss_gb(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }


def worker_flops(size: int, batch: int) -> dict:
    """FLOPs of one step by XLA's cost analysis of the step with every convolution a direct one (the
    network's arithmetic; im2col's pads and copies are no FLOPs), the count every variant is rated by."""
    return {"flops_per_step": common.flops(jax_step(size=size, batch=batch, impl="xla", dtype="float32")[0])}


def worker_torch(size: int, batch: int, steps: int, dtype: str) -> dict:
    import torch

    from bench import torch_reference

    torch.manual_seed(0)
    model = torch_reference.PretextNet(head=common.PAPER_HEAD).to(memory_format=torch.channels_last).train()
    optimizer = torch_reference.make_optimizer(model)
    inputs = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    targets = torch.softmax(torch.randn(batch, 2), -1)
    seconds, times = common.median_seconds(
        lambda: torch_reference.train_step(model, optimizer, inputs, targets, bf16=dtype == "bfloat16"),
        repeats=steps,
        warmup=2,
    )
    return {
        "seconds_per_step": seconds,
        "times": times,
        "peak_rss_gb": common.peak_rss_gb(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def profile(size: int, batch: int, steps: int) -> None:
    """Time per XLA operation category of sla_jax's step, from a JAX profiler trace (summed over threads)."""
    import jax

    compiled, state, inputs, targets = jax_step(size=size, batch=batch, impl="auto", dtype="float32")
    for _ in range(2):
        state, loss = compiled(state, inputs, targets)
    loss.block_until_ready()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            state, loss = compiled(state, inputs, targets)
            loss.block_until_ready()
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
    per_op = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
                continue
            for event in line.events:
                if "ThunkExecutor" in event.name or "Await" in event.name or "Threadpool" in event.name:
                    continue
                per_op[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e6 / steps
    print(f"sla_jax step at {size} px, batch {batch}: ms per step by XLA operation (summed over threads)")
    for name, ms in per_op.most_common(20):
        print(f"{ms:10.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement (after 2 warm-up)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every variant this many times, interleaved; report the median round",
    )
    parser.add_argument("--variants", default="jax,jax-xla-defaults,torch,torch-bf16")
    parser.add_argument("--profile", action="store_true", help="profile sla_jax's step instead")
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "train_step.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker and args.worker[0] == "flops":
        common.emit(worker_flops(*map(int, args.worker[1:])))
        return
    if args.worker:
        name, size, batch, steps = args.worker[0], *map(int, args.worker[1:])
        framework, options, _ = VARIANTS[name]
        result = (
            worker_jax(size, batch, steps, **options)
            if framework == "jax"
            else worker_torch(size, batch, steps, **options)
        )
        common.emit(result)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.profile:
        for size in sizes:
            profile(size, args.batch, args.steps)
        return
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    rows = []
    for size in sizes:
        rounds = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name in variants:
                print(f"{size} px, {name}, round {round_ + 1}/{args.rounds} ...", flush=True)
                rounds[name].append(
                    common.run_worker(__file__, [name, size, args.batch, args.steps], env=VARIANTS[name][2])
                )
        measured = {
            name: {
                **sorted(runs, key=lambda m: m["seconds_per_step"])[len(runs) // 2],
                "round_seconds": [m["seconds_per_step"] for m in runs],
            }
            for name, runs in rounds.items()
        }
        flops = common.run_worker(__file__, ["flops", size, args.batch])["flops_per_step"]
        reference = measured.get("torch")
        for name, m in measured.items():
            rows.append(
                {
                    "size": size,
                    "batch": args.batch,
                    "variant": name,
                    "seconds_per_step": m["seconds_per_step"],
                    "images_per_s": args.batch / m["seconds_per_step"],
                    "gflops": flops / m["seconds_per_step"] / 1e9,
                    "flops_per_step": flops,
                    "vs_torch": reference["seconds_per_step"] / m["seconds_per_step"] if reference else None,
                    "peak_rss_gb": m["peak_rss_gb"],
                    "times": m["times"],
                    "round_seconds": m["round_seconds"],
                }
            )
    columns = [
        ("size", "px", ""),
        ("variant", "variant", ""),
        ("seconds_per_step", "s/step", ".3f"),
        ("images_per_s", "images/s", ".1f"),
        ("gflops", "GFLOP/s", ".0f"),
        ("vs_torch", "× torch fp32", ".2f"),
        ("peak_rss_gb", "peak RSS GB", ".2f"),
    ]
    print(common.table(rows, columns))
    common.write_json(
        args.out,
        {
            "rows": rows,
            "batch": args.batch,
            "steps": args.steps,
            "rounds": args.rounds,
            "head": common.PAPER_HEAD,
            "flops_source": "XLA cost analysis of the sla_jax step with direct convolutions",
            "machine": common.machine(),
            "command": " ".join(sys.argv),
        },
    )


if __name__ == "__main__":
    main()
