"""How few training images the image-level decision threshold needs: for n training images drawn at random
from a real category, fit the GDE and set the threshold as a run does (the 0.99 quantile of out-of-fold
scores over min(5, n) folds), then measure the share of the category's good *test* images called defective
(the false-positive rate the threshold promises to keep near 1 %). Features: a randomly initialised ResNet-18
(no weights can be loaded here), which is what a run with ``train.steps=0`` and no ``model.init`` scores with;
the calibration question does not depend on how good the features are.

    python bench/small_train.py --root=../shared/data/magnetic_tile --category=magnetic_tile \
        [--sizes=2,3,4,5,6,8,10,16,32] [--draws=20] [--image_size=64] [--out=bench/small_train.json]

Prints a table (n, median and 90th-percentile test FPR over the draws, draws whose threshold lay below
every good test score), writes JSON. ``sla_jax.scoring.detection.MIN_TRAIN_IMAGES`` is chosen from it.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--sizes", default="2,3,4,5,6,8,10,16,32")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "small_train.json"))
    args = parser.parse_args()

    import jax
    import numpy as np

    from sla_jax import data as data_lib
    from sla_jax.scoring import detection
    from sla_jax.training import state as state_lib
    from sla_jax.training.models import PretextNet

    dataset = data_lib.load_dataset(
        args.root,
        category=args.category,
        image_size=args.image_size,
        require_masks=False,
        cache_dir=os.path.join("/tmp", "small_train_tfds"),
    )
    model = PretextNet(num_classes=2, head=(128,), stem="small")
    variables = model.init(jax.random.key(0), np.zeros((1, args.image_size, args.image_size, 3)), train=False)
    mesh = state_lib.data_mesh()
    embed = lambda images: detection.embed(variables, images, model=model, batch_size=64, mesh=mesh)  # noqa: E731
    train_feats, test_feats = embed(dataset.train.images), embed(dataset.test.images)
    good_test = test_feats[dataset.test.labels == 0]
    spec = detection.EvalSpec()
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        fprs, below_all = [], 0
        for _ in range(args.draws):
            pick = rng.choice(len(train_feats), size=n, replace=False)
            threshold, _ = detection.decision_threshold(
                None, None, model=model, spec=spec, mesh=mesh, train_feats=train_feats[pick]
            )
            _, scores = detection.image_scores(train_feats[pick], good_test)
            fprs.append(float(np.mean(scores > threshold)))
            below_all += bool(np.all(scores > threshold))
        rows.append(
            {
                "n_train": n,
                "fpr_median": float(np.median(fprs)),
                "fpr_p90": float(np.quantile(fprs, 0.9)),
                "draws_all_good_flagged": below_all,
                "draws": args.draws,
            }
        )
        print(
            common.table(
                rows[-1:],
                [
                    ("n_train", "n", "d"),
                    ("fpr_median", "test FPR median", ".3f"),
                    ("fpr_p90", "p90", ".3f"),
                    ("draws_all_good_flagged", "all good flagged", "d"),
                ],
            ),
            flush=True,
        )
    common.write_json(
        args.out,
        {
            "command": " ".join(sys.argv),
            "category": args.category,
            "image_size": args.image_size,
            "n_test_good": int(len(good_test)),
            "machine": common.machine(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
