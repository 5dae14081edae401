"""Per-layer convolution profile: each distinct convolution of ResNet-18 at a given input size, forward +
gradients (input and kernel; kernel only for the stem), as XLA's convolution and as im2col + matmul,
under the XLA CPU flags as shipped and without them, and PyTorch's (oneDNN, ``channels_last``) for
reference. What ``Conv(impl='auto')`` and ``sla_jax.common.runtime`` were chosen from. Prints a table, writes JSON.

    python bench/conv_layers.py [--sizes 64,128,256] [--batch 32] [--repeats 5] [--out bench/conv_layers.json]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def layers(size: int) -> list[tuple]:
    """(name, input side, in channels, out channels, kernel, stride, padding) of ResNet-18's convolutions."""
    s = size // 4  # after the stem's stride-2 convolution and max-pool
    return [
        ("stem 7×7/2", size, 3, 64, 7, 2, 3),
        ("layer1 3×3", s, 64, 64, 3, 1, 1),
        ("layer2 3×3/2", s, 64, 128, 3, 2, 1),
        ("layer2 3×3", s // 2, 128, 128, 3, 1, 1),
        ("layer2 1×1/2", s, 64, 128, 1, 2, 0),
        ("layer3 3×3/2", s // 2, 128, 256, 3, 2, 1),
        ("layer3 3×3", s // 4, 256, 256, 3, 1, 1),
        ("layer4 3×3/2", s // 4, 256, 512, 3, 2, 1),
        ("layer4 3×3", s // 8, 512, 512, 3, 1, 1),
    ]


def worker(size: int, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from sla_jax.training.models import im2col_conv

    rows = []
    for name, side, c_in, c_out, k, stride, pad in layers(size):
        x = jax.random.normal(jax.random.key(0), (batch, side, side, c_in))
        w = jax.random.normal(jax.random.key(1), (k, k, c_in, c_out)) * 0.05
        impls = {
            "xla": lambda x, w: jax.lax.conv_general_dilated(
                x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            ),
            "im2col": lambda x, w: im2col_conv(x, w, strides=stride, padding=pad),
        }
        out_side = (side + 2 * pad - k) // stride + 1
        row = {"layer": name, "input": f"{side}×{side}×{c_in}", "output_pixels": out_side**2}
        for impl, fn in impls.items():
            if impl == "im2col" and k == 1:
                continue
            argnums = (1,) if name.startswith("stem") else (0, 1)
            grad = jax.jit(jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=argnums))
            seconds, _ = common.median_seconds(lambda: jax.block_until_ready(grad(x, w)), repeats=repeats)
            row[impl + "_ms"] = 1e3 * seconds
        rows.append(row)
    return {"rows": rows}


def worker_torch(size: int, batch: int, repeats: int) -> dict:
    import torch

    rows = []
    for name, side, c_in, c_out, k, stride, pad in layers(size):
        x = torch.randn(batch, c_in, side, side).to(memory_format=torch.channels_last)
        x.requires_grad_(not name.startswith("stem"))
        conv = torch.nn.Conv2d(c_in, c_out, k, stride, pad, bias=False).to(memory_format=torch.channels_last)

        def step():
            conv.zero_grad(set_to_none=True)
            x.grad = None
            (conv(x) ** 2).sum().backward()

        seconds, _ = common.median_seconds(step, repeats=repeats)
        rows.append({"layer": name, "torch_ms": 1e3 * seconds})
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "conv_layers.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = worker_torch if args.worker[0] == "torch" else worker
        common.emit(fn(*map(int, args.worker[1:])))
        return
    rows = []
    for size in map(int, args.sizes.split(",")):
        measured = {}
        for flags, env in (("sla_jax", {}), ("XLA defaults", {"SLA_JAX_XLA_CPU_DEFAULTS": "0"})):
            print(f"{size} px, {flags} flags ...", flush=True)
            measured[flags] = common.run_worker(__file__, ["jax", size, args.batch, args.repeats], env=env)["rows"]
        print(f"{size} px, PyTorch ...", flush=True)
        reference = common.run_worker(__file__, ["torch", size, args.batch, args.repeats])["rows"]
        for ours, defaults, theirs in zip(measured["sla_jax"], measured["XLA defaults"], reference):
            rows.append(
                {
                    "size": size,
                    **ours,
                    "xla_defaults_ms": defaults.get("xla_ms"),
                    "im2col_defaults_ms": defaults.get("im2col_ms"),
                    "torch_ms": theirs["torch_ms"],
                }
            )
    print(f"fwd + backward of one convolution, batch {args.batch}, ms (median of {args.repeats})")
    print(
        common.table(
            rows,
            [
                ("size", "px", ""),
                ("layer", "layer", ""),
                ("input", "input", ""),
                ("output_pixels", "output px", ""),
                ("xla_ms", "XLA conv", ".1f"),
                ("im2col_ms", "im2col", ".1f"),
                ("xla_defaults_ms", "XLA conv, XLA defaults", ".1f"),
                ("im2col_defaults_ms", "im2col, XLA defaults", ".1f"),
                ("torch_ms", "PyTorch", ".1f"),
            ],
        )
    )
    common.write_json(
        args.out,
        {
            "rows": rows,
            "batch": args.batch,
            "repeats": args.repeats,
            "machine": common.machine(),
            "command": " ".join(sys.argv),
        },
    )


if __name__ == "__main__":
    main()
