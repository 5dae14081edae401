"""Dense localization inference speed: one 256×256 image → 3,249 patches (32 px, stride 4) → defect map.

Times the three stages (patch embedding, GDE scoring, receptive-field upsampling) for each ResNet-18 stem
after a warm-up call, and reports images/s and the process's peak RSS. Prints a table, writes JSON.

    python bench/localization.py [--image-size 256] [--repeats 3] [--batch-size 1024] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import density, localization
from sla_jax.scoring import detection
from sla_jax.training.models import PretextNet
from sla_jax.training.state import data_mesh


def bench_stem(stem: str, *, image_size: int, repeats: int, batch_size: int) -> dict:
    model = PretextNet(num_classes=3, head=(512, 128), stem=stem)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(0))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, image_size, image_size, 3), dtype=np.uint8)
    mesh = data_mesh()
    features = partial(
        detection.patch_features, variables, model=model, patch_size=32, stride=4, batch_size=batch_size, mesh=mesh
    )
    train_feats = rng.normal(size=(4096, 512)).astype(np.float32)
    gaussian = jax.jit(density.fit_gaussian)(jnp.asarray(train_feats))
    score = jax.jit(density.mahalanobis)
    upsample = jax.jit(partial(localization.receptive_field_upsample, field=32, stride=4, sigma=10.0))

    def once():
        t0 = time.perf_counter()
        feats = features(image)
        t1 = time.perf_counter()
        n, h, w, d = feats.shape
        low = score(gaussian, jnp.asarray(feats.reshape(-1, d))).reshape(n, h, w)
        low.block_until_ready()
        t2 = time.perf_counter()
        upsample(low).block_until_ready()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, h * w

    once()  # compile
    runs = [once() for _ in range(repeats)]
    embed_s, score_s, rfu_s = (float(np.median([r[i] for r in runs])) for i in range(3))
    total = embed_s + score_s + rfu_s
    return {
        "stem": stem,
        "image_size": image_size,
        "patches": runs[0][3],
        "embed_s": embed_s,
        "score_s": score_s,
        "rfu_s": rfu_s,
        "seconds_per_image": total,
        "images_per_s": 1.0 / total,
        "patches_per_s": runs[0][3] / embed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024, help="patches per forward pass")
    parser.add_argument("--stems", default="imagenet,small")
    parser.add_argument("--out", default="bench/localization.json")
    args = parser.parse_args()
    rows = [
        bench_stem(s, image_size=args.image_size, repeats=args.repeats, batch_size=args.batch_size)
        for s in args.stems.split(",")
    ]
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{'stem':<10}{'patches':>8}{'embed s':>10}{'score s':>10}{'RFU s':>8}{'images/s':>10}{'patches/s':>11}")
    for r in rows:
        print(
            f"{r['stem']:<10}{r['patches']:>8}{r['embed_s']:>10.3f}{r['score_s']:>10.3f}{r['rfu_s']:>8.3f}"
            f"{r['images_per_s']:>10.3f}{r['patches_per_s']:>11.0f}"
        )
    print(f"peak RSS of the process: {peak_rss_gb:.2f} GB")
    record = {
        "rows": rows,
        "peak_rss_gb": peak_rss_gb,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "batch_size": args.batch_size,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
