"""Write a finished run's ``report.html`` again from the files in its workdir: ``python -m sla_jax.report WORKDIR``
(:func:`sla_jax.outputs.report.write_run_report`)."""

from __future__ import annotations

from sla_jax import cli
from sla_jax.outputs import report


def main(argv):
    if len(argv) != 2:
        raise cli.UsageError("usage: python -m sla_jax.report WORKDIR")
    print(f"wrote {report.write_run_report(cli.existing_dir(argv[1], what='WORKDIR'))}")


if __name__ == "__main__":
    cli.run(main, compilation_cache=False)
