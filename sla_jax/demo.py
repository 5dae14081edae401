"""Write the embedded synthetic demo dataset (MVTec AD layout): ``python -m sla_jax.demo OUT_DIR [--seed N]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sla_jax.data.synthetic import write_demo_dataset


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sla_jax.demo", description="Write the synthetic demo dataset (MVTec AD layout)."
    )
    parser.add_argument("out_dir", help="folder to write (its category folders are replaced)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_demo_dataset(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()
