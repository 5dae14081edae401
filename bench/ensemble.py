"""K members in one program (vmapped step) against K separate runs, same settings, same process.

"Separate runs" train the members one after another with ``pretext.compile_train_step``, clearing JAX's
compilation cache before each (as K separate processes would each compile); the ensemble compiles its
vmapped step once. Both run the same number of steps at the same shapes; wall times include
compilation, and the steady per-step times (after the first step) are reported too. Prints a table,
writes JSON.

    python bench/ensemble.py [--members 14] [--steps 10] [--image-size 64] [--batch-size 8]
                             [--conv-impl im2col] [--out bench/ensemble.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax.training import ensemble, pretext
from sla_jax.training.models import PretextNet
from sla_jax.training.state import data_mesh, init_state, make_optimizer

ALPHAS = (1.0, 2.0, 5.0, 7.0, 10.0, 15.0)


def grid(n: int) -> list[ensemble.Member]:
    """The sweep's members: α from Table 4 × seeds, then hard labels, cut to ``n``."""
    members = [ensemble.Member(seed=s, alpha=a, epsilon=0.02, mode="soft") for a in ALPHAS for s in range(n)]
    hard = [ensemble.Member(seed=s, alpha=10.0, epsilon=0.02, mode="hard") for s in range(n)]
    per_seed = -(-n // (len(ALPHAS) + 1))
    chosen = [m for m in members if m.seed < per_seed] + [m for m in hard if m.seed < per_seed]
    return chosen[:n]


def timed_steps(step, state, args, *, steps: int) -> tuple[float, float, object]:
    """(seconds of the first step incl. compilation, median seconds of the rest, final state)."""
    t0 = time.perf_counter()
    state, metrics = step(state, *args)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps - 1):
        t0 = time.perf_counter()
        state, metrics = step(state, *args)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)) if times else float("nan"), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=14)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--conv-impl", default="im2col")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "ensemble.json"))
    args = parser.parse_args()

    members = grid(args.members)
    model = PretextNet(num_classes=2, head=(512, 128), stem="imagenet", conv_impl=args.conv_impl)
    optimizer = make_optimizer(learning_rate=0.03, momentum=0.9, weight_decay=3e-5, total_steps=args.steps)
    spec = pretext.StepSpec(batch_size=args.batch_size, transform="co")
    mesh = data_mesh()
    images = jnp.asarray(
        np.random.default_rng(0).integers(0, 256, (60, args.image_size, args.image_size, 3), dtype=np.uint8)
    )
    hparams = ensemble.stack_hparams(members)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in members)))
    data_key = ensemble.member_keys(0)[1]

    jax.clear_caches()
    t0 = time.perf_counter()
    states = ensemble.init_ensemble(init_keys, hparams, model=model, optimizer=optimizer, image_size=args.image_size)
    step = ensemble.compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    first, per_step, _ = timed_steps(step, states, (images, step_keys, hparams, data_key), steps=args.steps)
    together = {"seconds": time.perf_counter() - t0, "first_step_s": first, "step_s": per_step}

    separate = {"seconds": 0.0, "first_step_s": [], "step_s": []}
    for k in range(len(members)):
        jax.clear_caches()
        t0 = time.perf_counter()
        state = init_state(init_keys[k], model=model, optimizer=optimizer, image_size=args.image_size)
        single = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
        hp = jax.tree_util.tree_map(lambda x: x[k], hparams)
        first, per_step, _ = timed_steps(single, state, (images, step_keys[k], hp, data_key), steps=args.steps)
        separate["seconds"] += time.perf_counter() - t0
        separate["first_step_s"].append(first)
        separate["step_s"].append(per_step)
    separate_step = float(np.sum(separate["step_s"]))

    result = {
        "members": len(members),
        "steps": args.steps,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "conv_impl": args.conv_impl,
        "model": "ResNet-18 (imagenet stem) + head (512, 128)",
        "transform": "co",
        "ensemble": together,
        "separate": separate,
        "ratio_total_separate_over_ensemble": separate["seconds"] / together["seconds"],
        "ratio_step_separate_over_ensemble": separate_step / together["step_s"],
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    print(
        f"{len(members)} members, {args.steps} steps of batch {args.batch_size} at {args.image_size} px "
        f"({args.conv_impl} convolutions), {jax.device_count()} {jax.default_backend()} device(s)"
    )
    print(f"{'':28s}{'wall s (incl. compile)':>24s}{'steady s/step (all K)':>24s}")
    print(f"{'one program (vmapped)':28s}{together['seconds']:24.1f}{together['step_s']:24.3f}")
    print(f"{'K separate runs':28s}{separate['seconds']:24.1f}{separate_step:24.3f}")
    print(
        f"{'separate / one program':28s}{result['ratio_total_separate_over_ensemble']:24.2f}"
        f"{result['ratio_step_separate_over_ensemble']:24.2f}"
    )
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
