"""How much of an image AUROC is the test set's luck? A stratified bootstrap of each run's test images.

``python bench/auroc_spread.py --workdir=RUN [--workdir=...] --out=DIR`` reads each training run's
``scores.csv`` and resamples its defective and its good test images separately (scipy's ``bootstrap``,
AUROC as the Mann–Whitney U over the pair count, ties counted half), so every resample keeps the test set's
sizes: per run the AUROC, the bootstrap standard deviation and a 95 % percentile interval, how precisely
this test set measures the run's AUROC as a property of the category.

Two runs scored on the same images share part of that luck. ``--pair=A,B`` (repeatable, all pairs on one
test set) compares them on it: AUROC(A) − AUROC(B) with both runs scored on the same resampled images each
time, per pair and as the mean over the pairs (seeds), with a 95 % interval and a two-sided bootstrap p
(resamples with no difference count half to each side). It answers whether the difference is more than
this test set's luck for these trained models; the spread between seeds is a separate question. Writes
``DIR/auroc_spread.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.auroc_stats import aligned_scores, auroc_spread, paired_difference  # noqa: E402
from sla_jax.outputs.files import read_scores  # noqa: E402


def missing_scores(workdir: str) -> str | None:
    path = os.path.join(workdir, "scores.csv")
    if os.path.isfile(path):
        return None
    return (
        f"{path} not found: each folder must be a finished run's (python -m sla_jax.evaluate "
        f"--workdir={workdir} writes it; bench/peer_cutpaste_port.py writes the port's)"
    )


def split_pair(text: str) -> list[str]:
    """``A,B`` → ``[A, B]``. Folder names may hold commas themselves (a sweep's ``seed=0,x=1``), so the comma that
    splits is the one leaving two existing folders; without one, the single comma; otherwise ambiguous."""
    cuts = [i for i, c in enumerate(text) if c == ","]
    both = [[text[:i], text[i + 1 :]] for i in cuts if os.path.isdir(text[:i]) and os.path.isdir(text[i + 1 :])]
    if len(both) == 1:
        return both[0]
    if len(cuts) == 1:
        return [text[: cuts[0]], text[cuts[0] + 1 :]]
    raise ValueError(
        f"--pair={text}: give two run folders as A,B (found {len(both)} ways to split it into two existing folders)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", action="append", default=[], help="a training run's folder (has scores.csv)")
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        help="A,B: two runs' folders scored on the same test images (repeatable, one test set)",
    )
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/auroc_spread")
    args = parser.parse_args()
    if not args.workdir and not args.pair:
        parser.error("give --workdir or --pair")
    try:
        pairs = [split_pair(p) for p in args.pair]
    except ValueError as e:
        parser.error(str(e))
    problem = next(filter(None, map(missing_scores, [*args.workdir, *(w for p in pairs for w in p)])), None)
    if problem:
        sys.exit(problem)
    rows = []
    for workdir in args.workdir:
        scores, labels, _ = read_scores(os.path.join(workdir, "scores.csv"))
        rows.append({"workdir": workdir, **auroc_spread(scores, labels, seed=args.seed, resamples=args.resamples)})
    paired = []
    if pairs:
        try:
            scores_RxN, labels_N = aligned_scores([w for p in pairs for w in p])
        except ValueError as e:
            sys.exit(f"--pair: {e}")
        a, b = scores_RxN[0::2], scores_RxN[1::2]
        for k, (wa, wb) in enumerate(pairs):
            paired.append(
                {
                    "pair": f"{wa} − {wb}",
                    **paired_difference(a[k], b[k], labels_N, seed=args.seed, resamples=args.resamples),
                }
            )
        if len(pairs) > 1:
            paired.append(
                {
                    "pair": f"mean of the {len(pairs)} pairs",
                    **paired_difference(a, b, labels_N, seed=args.seed, resamples=args.resamples),
                }
            )
    command = " ".join(["python bench/auroc_spread.py", *sys.argv[1:]])
    common.write_json(
        os.path.join(args.out, "auroc_spread.json"),
        {"command": command, "machine": common.machine(), "runs": rows, "pairs": paired},
    )
    text = f"Stratified bootstrap of the test images ({args.resamples} resamples). Command: `{command}`\n\n"
    if rows:
        shown = [{**r, "interval": f"{r['ci95'][0]:.4f}–{r['ci95'][1]:.4f}"} for r in rows]
        text += (
            common.table(
                shown,
                [
                    ("workdir", "run", ""),
                    ("defective", "defective", "d"),
                    ("good", "good", "d"),
                    ("image_auroc", "image AUROC", ".4f"),
                    ("bootstrap_sd", "bootstrap sd", ".4f"),
                    ("interval", "95 % interval", ""),
                ],
            )
            + "\n\n"
        )
    if paired:
        shown = [{**r, "interval": f"{r['ci95'][0]:+.4f} to {r['ci95'][1]:+.4f}"} for r in paired]
        text += (
            "Paired: AUROC(A) − AUROC(B) on the same resampled images.\n\n"
            + common.table(
                shown,
                [
                    ("pair", "A − B", ""),
                    ("difference", "difference", "+.4f"),
                    ("bootstrap_sd", "bootstrap sd", ".4f"),
                    ("interval", "95 % interval", ""),
                    ("p_two_sided", "p (two-sided)", ".3f"),
                ],
            )
            + "\n"
        )
    with open(os.path.join(args.out, "auroc_spread.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
