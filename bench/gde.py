"""GDE fit + scoring, sla_jax (jitted jnp, float32) against scikit-learn (``LedoitWolf`` + ``mahalanobis``,
float64), side by side in one process on the same data: N training and M test embeddings of D
dimensions, L2-normalised as sla_jax embeds them. Reports median seconds of fit, score and both after
warm-up, the ratio, and the largest relative difference of the scores and the shrinkage. Prints a
table, writes JSON.

    python bench/gde.py [--n 10000] [--m 10000] [--dim 512] [--repeats 5] [--out bench/gde.json]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--m", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "gde.json"))
    args = parser.parse_args()

    import jax
    import numpy as np
    from sklearn.covariance import LedoitWolf

    from sla_jax import density

    rng = np.random.default_rng(0)
    # Correlated features (a random linear map of Gaussians, then L2-normalised), like embeddings.
    mix = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)

    def embeddings(n):
        x = rng.normal(size=(n, args.dim)) @ mix + 0.3
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    train, test = embeddings(args.n), embeddings(args.m)
    train_j, test_j = jax.device_put(train), jax.device_put(test)
    fit, score = jax.jit(density.fit_gaussian), jax.jit(density.mahalanobis)

    def jax_fit():
        return jax.block_until_ready(fit(train_j))

    gaussian = jax_fit()

    def jax_score():
        return jax.block_until_ready(score(gaussian, test_j))

    def jax_both():
        return jax.block_until_ready(score(fit(train_j), test_j))

    sk = {}

    def sk_fit():
        sk["model"] = LedoitWolf().fit(train.astype(np.float64))

    sk_fit()

    def sk_score():
        return sk["model"].mahalanobis(test.astype(np.float64))

    def sk_both():
        return LedoitWolf().fit(train.astype(np.float64)).mahalanobis(test.astype(np.float64))

    rows = []
    for stage, ours, theirs in (
        ("fit", jax_fit, sk_fit),
        ("score", jax_score, sk_score),
        ("fit + score", jax_both, sk_both),
    ):
        t_ours, _ = common.median_seconds(ours, repeats=args.repeats)
        t_theirs, _ = common.median_seconds(theirs, repeats=args.repeats)
        rows.append({"stage": stage, "sla_jax_s": t_ours, "sklearn_s": t_theirs, "speedup": t_theirs / t_ours})
    ours_scores = np.asarray(jax_both(), np.float64)
    theirs_scores = sk_both()
    rel = float(np.max(np.abs(ours_scores - theirs_scores) / np.abs(theirs_scores)))
    shrink = abs(float(gaussian.shrinkage) - float(sk["model"].shrinkage_))
    print(f"N={args.n} train, M={args.m} test, D={args.dim}; {jax.default_backend()} backend")
    print(
        common.table(
            rows,
            [
                ("stage", "stage", ""),
                ("sla_jax_s", "sla_jax s", ".4f"),
                ("sklearn_s", "scikit-learn s", ".4f"),
                ("speedup", "× faster", ".1f"),
            ],
        )
    )
    print(
        f"largest relative score difference {rel:.2e}; shrinkage difference {shrink:.2e}; "
        f"peak RSS {common.peak_rss_gb():.2f} GB"
    )
    common.write_json(
        args.out,
        {
            "rows": rows,
            "n": args.n,
            "m": args.m,
            "dim": args.dim,
            "repeats": args.repeats,
            "max_relative_score_difference": rel,
            "shrinkage_difference": shrink,
            "peak_rss_gb": common.peak_rss_gb(),
            "machine": common.machine(),
            "command": " ".join(sys.argv),
        },
    )


if __name__ == "__main__":
    main()
