"""Run a sweep: one ``python -m sla_jax.train`` per point, locally or through submitit (SLURM).

``python -m launch.sweep --sweep=configs/demo_sweep.py --sweep_dir=runs/demo_sweep [--backend=local --jobs=1]``

A sweep file defines ``get_sweep()`` returning a dict:

- ``config``: the base config file (relative to the sweep file's folder, or absolute);
- ``grid``: ``{config key: [values]}``, expanded as a Cartesian product;
- ``points``: a list of ``{config key: value}`` override sets, each combined with every grid combination;
- ``fixed``: overrides shared by every point;
- ``executor``: submitit parameters for ``--backend=slurm`` / ``submitit_local`` (``timeout_min``,
  ``gpus_per_node``, ``slurm_partition``, ...).

Each point trains in ``SWEEP_DIR/<point name>`` (its own workdir, so the checkpoint logic of
``sla_jax.train`` resumes an interrupted point) and logs to ``train.log`` there. A point whose workdir
holds ``results.json`` is finished and skipped when the sweep is run again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import importlib.machinery
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sla_jax.experiment.identity import flatten
from sla_jax.outputs import atomic

SWEEP_KEYS = ("config", "grid", "points", "fixed", "executor")
BACKENDS = ("local", "slurm", "submitit_local")
SWEEP_RECORD = "sweep.json"
POINT_RECORD = "sweep_point.json"
RESULTS = "results.json"
DEFAULT_EXECUTOR = {"timeout_min": 24 * 60}  # submitit's own default is 2 minutes for local jobs


class SweepError(ValueError):
    """A sweep file, config or flag that cannot work as given (exit status 2); the message says what to change."""

    exit_code = 2


class FolderError(SweepError):
    """A data or output folder that cannot be used as it is (exit status 1)."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Sweep:
    source: str  # the sweep file
    config: str  # absolute path of the base config file
    grid: dict[str, list]
    points: list[dict[str, Any]]
    fixed: dict[str, Any]
    executor: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    config: str
    workdir: str
    overrides: dict[str, Any]  # every --config.KEY=VALUE of the run (fixed ones included)
    varying: dict[str, Any]  # the overrides that tell this point from the others


def load_sweep(path: str, *, extra_fixed: Mapping[str, Any] | None = None) -> Sweep:
    """The sweep declared by ``get_sweep()`` in ``path``, checked: unknown sections, a missing base
    config or config keys that do not exist are errors naming the file and the key."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise SweepError(f"sweep file {path} not found (expected e.g. --sweep=configs/demo_sweep.py)")
    module = _load_module(path, name=f"sweep_{abs(hash(path))}", what="sweep")
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path} defines no get_sweep(); it must return a dict with keys {', '.join(SWEEP_KEYS)}")
    declared = dict(module.get_sweep())
    unknown = set(declared) - set(SWEEP_KEYS)
    if unknown:
        raise SweepError(
            f"{path}: get_sweep() returned unknown key(s) {sorted(unknown)}; known: {', '.join(SWEEP_KEYS)}"
        )
    if "config" not in declared:
        raise SweepError(f"{path}: get_sweep() must name the base config, e.g. config='demo.py'")
    config = os.path.join(os.path.dirname(path), declared["config"])
    if not os.path.isfile(config):
        raise SweepError(
            f"{path}: config={declared['config']!r} not found at {config} "
            "(a relative path is relative to the sweep file's folder)"
        )
    grid = {key: list(values) for key, values in dict(declared.get("grid", {})).items()}
    for key, values in grid.items():
        if not values:
            raise SweepError(f"{path}: grid[{key!r}] is empty; give at least one value")
    varied = sorted(set(extra_fixed or {}) & ({*grid} | {k for p in declared.get("points", []) for k in p}))
    if varied:
        raise SweepError(
            f"--set {', '.join(varied)}: {path} varies {'it' if len(varied) == 1 else 'them'} per "
            "point, which would override the --set value; edit the sweep file instead"
        )
    sweep = Sweep(
        source=path,
        config=os.path.abspath(config),
        grid=grid,
        points=[dict(p) for p in declared.get("points", [])] or [{}],
        fixed={**dict(declared.get("fixed", {})), **dict(extra_fixed or {})},
        executor={**DEFAULT_EXECUTOR, **dict(declared.get("executor", {}))},
    )
    check_keys(sweep)
    return sweep


def base_config(path: str):
    """The ``get_config()`` of a config file, without overrides."""
    module = _load_module(path, name="sweep_base_config", what="config")
    if not hasattr(module, "get_config"):
        raise SweepError(f"{path} defines no get_config(): it is not a config file (see configs/)")
    return module.get_config()


def _load_module(path: str, *, name: str, what: str):
    """The Python file ``path`` run as a module; any failure to run it is a SweepError naming the file."""
    try:
        loader = importlib.machinery.SourceFileLoader(name, path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        loader.exec_module(module)
    except Exception as error:  # a sweep or config file may raise anything while it runs
        raise SweepError(f"{path} is not a {what} file that runs: {type(error).__name__}: {error}") from None
    return module


def check_keys(sweep: Sweep) -> None:
    """Every override key must exist in the base config (caught here, before any job waits in a queue)."""
    flat = set(flatten(base_config(sweep.config).to_dict()))
    keys = set(sweep.fixed) | set(sweep.grid) | {k for p in sweep.points for k in p}
    for key in sorted(keys - flat):
        near = difflib.get_close_matches(key, sorted(flat), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise SweepError(f"{sweep.source}: {key!r} is not a key of {sweep.config}{hint}")


def expand(sweep: Sweep, sweep_dir: str) -> list[Point]:
    """One point per (explicit point × grid combination), named by its varying overrides."""
    combos = [dict(zip(sweep.grid, values)) for values in itertools.product(*sweep.grid.values())]
    varying = [{**point, **combo} for point in sweep.points for combo in combos]
    names = [point_name(v) for v in varying]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(
            f"{sweep.source}: points {duplicates} occur more than once; give each point a different override"
        )
    root = os.path.abspath(sweep_dir)
    return [
        Point(
            name=name, config=sweep.config, workdir=os.path.join(root, name), overrides={**sweep.fixed, **v}, varying=v
        )
        for name, v in zip(names, varying)
    ]


def check_points(points: Sequence[Point]) -> None:
    """Validate every point's config (base config with its overrides) as ``sla_jax.train`` would, before any
    folder is made: a value out of range is a SweepError naming the point (exit 2)."""
    from sla_jax.experiment.validation import ConfigError, validate_any

    configs: dict[str, Any] = {}
    for point in points:
        config = configs.setdefault(point.config, base_config(point.config))
        config = config.copy_and_resolve_references()
        try:
            config.update_from_flattened_dict(
                {k: tuple(v) if isinstance(v, list) else v for k, v in point.overrides.items()}
            )
            validate_any(config)
        except (ConfigError, KeyError, TypeError, ValueError) as error:
            reason = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise SweepError(f"run {point.name}: {reason} (nothing was created)") from None


def point_name(varying: Mapping[str, Any]) -> str:
    """``alpha=10.0,seed=1``: the last part of each key (the full key where two would clash), sorted;
    tuples as ``512x128``; characters other than letters, digits and ``._=,+-`` dropped."""
    if not varying:
        return "base"
    short = {key: key.rsplit(".", 1)[-1] for key in varying}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}

    def text(v):
        return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else format_value(v)

    parts = sorted(f"{key if short[key] in clash else short[key]}={text(value)}" for key, value in varying.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "", ",".join(parts))


def format_value(value: Any) -> str:
    """A value as ``--config.KEY=`` parses it (tuples in parentheses, booleans capitalised)."""
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return value if isinstance(value, str) else repr(value)


def train_command(point: Point, *, python: str = sys.executable) -> list[str]:
    return [
        python,
        "-m",
        "sla_jax.train",
        f"--config={point.config}",
        f"--workdir={point.workdir}",
        *(f"--config.{key}={format_value(value)}" for key, value in point.overrides.items()),
    ]


def is_finished(point: Point) -> bool:
    return os.path.isfile(os.path.join(point.workdir, RESULTS))


def run_point(point: Point) -> dict:
    """Train one point in a subprocess (or skip it when finished); its output goes to WORKDIR/train.log.

    Returns ``{"name", "status": "done" | "failed" | "skipped", "returncode", "seconds", "log"}``. In a
    multi-task SLURM job every task runs this; task k > 0 logs to ``train.task<k>.log``.
    """
    log = os.path.join(point.workdir, "train.log")
    if is_finished(point):
        return {"name": point.name, "status": "skipped", "returncode": 0, "seconds": 0.0, "log": log}
    os.makedirs(point.workdir, exist_ok=True)
    task = int(os.environ.get("SLURM_PROCID", "0")) if int(os.environ.get("SLURM_NTASKS", "1")) > 1 else 0
    if task:
        log = os.path.join(point.workdir, f"train.task{task}.log")
    command = train_command(point)
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        returncode = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
        ).returncode
    status = "done" if returncode == 0 and is_finished(point) else "failed"
    return {
        "name": point.name,
        "status": status,
        "returncode": returncode,
        "seconds": time.perf_counter() - started,
        "log": log,
    }


def check_same_runs(path: str, entries: Sequence[dict], *, folder: str) -> None:
    """Refuse a folder whose record (``path``) gave a run of the same name other overrides: finished runs
    are skipped by name, so a name must keep meaning the same run."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        before = {e["name"]: e["overrides"] for e in json.load(f)["points"]}
    changed = [
        e["name"]
        for e in entries
        if e["name"] in before
        and json.dumps(before[e["name"]], sort_keys=True) != json.dumps(e["overrides"], sort_keys=True)
    ]
    if changed:
        raise SweepError(
            f"{folder} holds runs {changed[:3]} with other overrides; use a new folder (finished runs "
            "are skipped by name, so they must mean the same run)"
        )


def check_out_folder(folder: str, *, flag: str) -> None:
    """``folder`` may be new or a folder; a file there is a SweepError naming the flag. Makes the folder."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise SweepError(f"{flag}={folder} is a file, not a folder: choose a folder for the runs")
    os.makedirs(folder, exist_ok=True)


def write_point_records(points: Sequence[Point]) -> None:
    """Each point's ``sweep_point.json`` (overrides and command) in its workdir."""
    for point in points:
        os.makedirs(point.workdir, exist_ok=True)
        atomic.write_json(
            os.path.join(point.workdir, POINT_RECORD),
            {
                "name": point.name,
                "config": point.config,
                "overrides": point.overrides,
                "varying": point.varying,
                "command": train_command(point),
            },
        )


def record(sweep: Sweep, points: Sequence[Point], sweep_dir: str) -> None:
    """Write SWEEP_DIR/sweep.json and each point's sweep_point.json; refuse a folder of another sweep."""
    check_out_folder(sweep_dir, flag="--sweep_dir")
    path = os.path.join(sweep_dir, SWEEP_RECORD)
    entries = [{"name": p.name, "overrides": p.overrides, "varying": p.varying} for p in points]
    check_same_runs(path, entries, folder=sweep_dir)
    atomic.write_json(
        path, {"sweep": sweep.source, "config": sweep.config, "varying_keys": _varying_keys(points), "points": entries}
    )
    write_point_records(points)


def run_local(points: Sequence[Point], *, jobs: int = 1) -> list[dict]:
    """Run the points in a pool of ``jobs`` subprocesses; a failed point is reported, the others go on."""
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_point, p) for p in points]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            result = future.result()
            print(
                f"[{i}/{len(points)}] {result['status']:7s} {result['name']} "
                f"({result['seconds']:.0f} s, log: {result['log']})",
                flush=True,
            )
            results.append(result)
    return results


def submit(points: Sequence[Point], *, cluster: str, folder: str, parameters: Mapping[str, Any]) -> list:
    """Submit one submitit job per point (a job array on SLURM); returns the submitit jobs."""
    import cloudpickle

    # Without this, importing submitit runs logging.config.dictConfig, which closes every logging handler
    # of the process (absl's closes the stream it was given); its warnings still reach stderr.
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    import submitit

    module = sys.modules[run_point.__module__]
    if module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(module)  # jobs need not import launch/ from their cwd
    try:
        executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
    except RuntimeError as e:  # no srun/sbatch on this machine
        raise SweepError(
            f"{e} (--backend=slurm needs SLURM's commands here; --backend=local or submitit_local run without them)"
        ) from None
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError) as e:
        raise SweepError(f"sweep executor parameters {dict(parameters)} rejected by submitit: {e}") from None
    with executor.batch():
        jobs = [executor.submit(run_point, point) for point in points]
    return jobs


def wait(jobs: Sequence, points: Sequence[Point]) -> list[dict]:
    """Results of submitted jobs, in order; a job that raised or was killed is a failed point."""
    results = []
    for job, point in zip(jobs, points):
        try:
            result = job.result()
        except Exception as e:  # submitit raises the job's error, or UncompletedJobError when it was killed
            result = {
                "name": point.name,
                "status": "failed",
                "returncode": None,
                "seconds": 0.0,
                "log": str(job.paths.stderr),
                "error": str(e).strip().splitlines()[-1:],
            }
        print(f"{result['status']:7s} {result['name']} (job {job.job_id}, log: {result['log']})", flush=True)
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from launch.arguments import Parser, fail

    parser = Parser(prog="python -m launch.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="sweep file defining get_sweep(), e.g. configs/demo_sweep.py")
    parser.add_argument("--sweep_dir", required=True, help="folder of the sweep: one workdir per point")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: a pool of subprocesses; slurm: sbatch through submitit; submitit_local: "
        "submitit's local executor (no scheduler, for testing the submitit path)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="local backend: points run at once")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra fixed override for every point (repeatable), e.g. --set=train.steps=3",
    )
    parser.add_argument("--no_wait", action="store_true", help="slurm: submit and return without waiting")
    args = parser.parse_args(argv)
    try:
        extra = dict(parse_set(s) for s in args.set)
        sweep = load_sweep(args.sweep, extra_fixed=extra)
        points = expand(sweep, args.sweep_dir)
        check_points(points)
        record(sweep, points, args.sweep_dir)
    except SweepError as e:
        return fail(e)
    pending = [p for p in points if not is_finished(p)]
    print(
        f"sweep {sweep.source}: {len(points)} points in {os.path.abspath(args.sweep_dir)}, "
        f"{len(points) - len(pending)} finished (skipped), {len(pending)} to run ({args.backend})",
        flush=True,
    )
    if not pending:
        return 0
    if args.backend == "local":
        results = run_local(pending, jobs=args.jobs)
    else:
        try:
            jobs = submit(
                pending,
                cluster="slurm" if args.backend == "slurm" else "local",
                folder=os.path.join(args.sweep_dir, "submitit"),
                parameters=sweep.executor,
            )
        except SweepError as e:
            return fail(e)
        print("submitted jobs " + ", ".join(j.job_id for j in jobs), flush=True)
        if args.no_wait and args.backend == "slurm":
            return 0
        results = wait(jobs, pending)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        print(
            f"{len(failed)} point(s) failed: {', '.join(failed)} (see each point's train.log); run the "
            "same command again to retry them",
            file=sys.stderr,
        )
    return 1 if failed else 0


def parse_set(text: str) -> tuple[str, Any]:
    """One ``--set=KEY=VALUE`` as ``(dotted key, value)``: the value as a Python literal where it is one
    (``3``, ``0.1``, ``(512, 128)``, ``True``), else the string. Shared by the launchers and ``bench/``."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SweepError(f"--set={text!r}: expected KEY=VALUE, e.g. --set=train.steps=3")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _varying_keys(points: Sequence[Point]) -> list[str]:
    return list(dict.fromkeys(k for p in points for k in p.varying))


if __name__ == "__main__":
    sys.exit(main())
