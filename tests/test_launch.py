"""Sweep launcher: expansion and checks (fast), then real sweeps of tiny training runs through the local
pool and through submitit's local executor, and the collected table and plot."""

import json
import shutil
from pathlib import Path

import pytest

from launch import collect as collect_lib
from launch import sweep as sweep_lib

REPO = Path(__file__).resolve().parents[1]

# A training run that takes seconds: 32 px, small stem, one hidden head layer, 2 steps of 8.
TINY = {
    "data.image_size": 32,
    "model.stem": "small",
    "model.head": (32,),
    "train.batch_size": 8,
    "train.steps": 2,
    "train.log_every": 1,
    "eval.batch_size": 64,
}


def write_sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_sweep.py"
    path.write_text(f"CONFIG = {str(REPO / 'configs' / 'demo.py')!r}\n\ndef get_sweep():\n    return {body}\n")
    return path


def tiny_sweep(tmp_path: Path, **sections) -> Path:
    fixed = {**TINY, "data.cache_dir": str(tmp_path / "tfds"), **sections.pop("fixed", {})}
    return write_sweep(tmp_path, f"dict(config=CONFIG, fixed={fixed!r}, **{sections!r})")


def test_grid_times_points_expands_to_named_workdirs(tmp_path):
    path = write_sweep(
        tmp_path,
        "dict(config=CONFIG, fixed={'train.steps': 3}, "
        "points=[{'labels.mode': 'hard'}, {'labels.mode': 'soft'}], "
        "grid={'labels.alpha': [1.0, 10.0], 'seed': [0, 1]})",
    )
    points = sweep_lib.expand(sweep_lib.load_sweep(str(path)), str(tmp_path / "sweep"))
    assert len(points) == 8
    names = [p.name for p in points]
    assert len(set(names)) == 8
    assert "alpha=10.0,mode=hard,seed=1" in names
    point = points[names.index("alpha=10.0,mode=hard,seed=1")]
    assert point.workdir == str(tmp_path / "sweep" / "alpha=10.0,mode=hard,seed=1")
    assert point.overrides == {"train.steps": 3, "labels.mode": "hard", "labels.alpha": 10.0, "seed": 1}
    command = sweep_lib.train_command(point)
    assert command[1:3] == ["-m", "sla_jax.train"]
    assert f"--config={REPO / 'configs' / 'demo.py'}" in command and "--config.labels.alpha=10.0" in command


def test_clashing_short_names_use_full_keys():
    assert (
        sweep_lib.point_name({"train.steps": 5, "localization.batch_size": 8, "train.batch_size": 16})
        == "localization.batch_size=8,steps=5,train.batch_size=16"
    )
    assert sweep_lib.point_name({"model.head": (512, 128)}) == "head=512x128"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("train.steps=3", ("train.steps", 3)),
        ("labels.alpha=0.5", ("labels.alpha", 0.5)),
        ("model.head=(512, 128)", ("model.head", (512, 128))),
        ("transform.name=cps", ("transform.name", "cps")),
        ("data.root=a=b", ("data.root", "a=b")),
    ],
)
def test_parse_set_reads_literals_and_keeps_other_text(text, expected):
    assert sweep_lib.parse_set(text) == expected


@pytest.mark.parametrize("text", ["train.steps", "=3"])
def test_parse_set_without_key_and_value_says_the_form(text):
    with pytest.raises(sweep_lib.SweepError, match="expected KEY=VALUE"):
        sweep_lib.parse_set(text)


@pytest.mark.parametrize(
    "body,match",
    [
        (
            "dict(config=CONFIG, grid={'labels.alpah': [1.0]})",
            "'labels.alpah' is not a key.*did you mean 'labels.alpha'",
        ),
        ("dict(config='nowhere.py')", "nowhere.py.*not found.*relative to the sweep file"),
        ("dict(config=CONFIG, grids={})", "unknown key.*grids"),
        ("dict(config=CONFIG, points=[{'seed': 0}, {'seed': 0}])", "seed=0.*more than once"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, body, match):
    path = write_sweep(tmp_path, body)
    with pytest.raises(sweep_lib.SweepError, match=match):
        sweep_lib.expand(sweep_lib.load_sweep(str(path)), str(tmp_path / "sweep"))


def test_sweep_dir_of_another_sweep_is_refused(tmp_path):
    sweep_dir = tmp_path / "sweep"
    for steps, ok in ((3, True), (3, True), (4, False)):
        sweep = sweep_lib.load_sweep(
            str(
                write_sweep(tmp_path, f"dict(config=CONFIG, fixed={{'train.steps': {steps}}}, grid={{'seed': [0, 1]}})")
            )
        )
        points = sweep_lib.expand(sweep, str(sweep_dir))
        if ok:
            sweep_lib.record(sweep, points, str(sweep_dir))
        else:
            with pytest.raises(sweep_lib.SweepError, match="other overrides"):
                sweep_lib.record(sweep, points, str(sweep_dir))


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_slurm_backend_without_slurm_says_so(tmp_path, capsys):
    path = write_sweep(tmp_path, "dict(config=CONFIG, grid={'seed': [0]})")
    assert sweep_lib.main([f"--sweep={path}", f"--sweep_dir={tmp_path / 'sweep'}", "--backend=slurm"]) == 2
    assert 'Could not detect "srun"' in capsys.readouterr().err


def test_collect_tables_and_plot_from_results(tmp_path):
    """Table rows follow sweep.json; a point without results.json is listed as missing."""
    sweep = sweep_lib.load_sweep(
        str(write_sweep(tmp_path, "dict(config=CONFIG, grid={'labels.alpha': [1.0, 5.0, 10.0], 'seed': [0, 1]})"))
    )
    points = sweep_lib.expand(sweep, str(tmp_path / "sweep"))
    sweep_lib.record(sweep, points, str(tmp_path / "sweep"))
    for i, point in enumerate(points[:-1]):
        Path(point.workdir, "results.json").write_text(json.dumps({"image_auroc": 0.5 + 0.05 * i, "steps": 3}))
    out = collect_lib.collect(str(tmp_path / "sweep"))
    assert out["x"] == "labels.alpha"
    rows = json.loads((tmp_path / "sweep" / "sweep_results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == [p.name for p in points]
    assert [r["image_auroc"] for r in rows[:-1]] == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7])
    assert rows[-1]["status"] == "missing" and "image_auroc" not in rows[-1]
    csv_lines = (tmp_path / "sweep" / "sweep_results.csv").read_text().splitlines()
    assert csv_lines[0] == "name,labels.alpha,seed,status,image_auroc,steps" and len(csv_lines) == 7
    assert (
        "| alpha=1.0,seed=0 | 1.0000 | 0 | done | 0.5000 | 3 |" in (tmp_path / "sweep" / "sweep_results.md").read_text()
    )
    assert (tmp_path / "sweep" / "sweep_results.png").stat().st_size > 5000


@pytest.mark.slow
def test_local_sweep_end_to_end_rerun_skips_and_collect(tmp_path, capsys):
    """Two real points and one whose data cannot be found: the bad one fails alone, the others finish; running
    the sweep again skips the finished ones (their logs do not grow) and retries the failed one. (A point
    whose config is invalid, such as α < 0, is refused before any folder is made: test_cli_errors.)"""
    path = tiny_sweep(tmp_path, points=[{"labels.alpha": 1.0}, {"labels.alpha": 10.0}, {"data.category": "nowhere"}])
    sweep_dir = tmp_path / "sweep"
    argv = [f"--sweep={path}", f"--sweep_dir={sweep_dir}", "--jobs=2"]
    assert sweep_lib.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 point(s) failed: category=nowhere" in err
    for name in ("alpha=1.0", "alpha=10.0"):
        results = json.loads((sweep_dir / name / "results.json").read_text())
        assert 0.0 <= results["image_auroc"] <= 1.0 and results["steps"] == 2
        assert json.loads((sweep_dir / name / "config.json").read_text())["labels"]["alpha"] == float(name[6:])
    assert "nowhere" in (sweep_dir / "category=nowhere" / "train.log").read_text()  # the DataError
    logs = {p: p.stat().st_size for p in sweep_dir.glob("*/train.log")}

    assert sweep_lib.main(argv) == 1
    out = capsys.readouterr().out
    assert "2 finished (skipped), 1 to run" in out
    for log, size in logs.items():
        assert (log.stat().st_size == size) == (log.parent.name != "category=nowhere"), log

    assert collect_lib.main([f"--sweep_dir={sweep_dir}"]) == 0
    rows = {r["name"]: r for r in json.loads((sweep_dir / "sweep_results.json").read_text())["rows"]}
    assert (
        rows["alpha=1.0"]["image_auroc"]
        == json.loads((sweep_dir / "alpha=1.0" / "results.json").read_text())["image_auroc"]
    )
    assert rows["category=nowhere"]["status"] == "missing"
    assert (sweep_dir / "sweep_results.png").stat().st_size > 5000


@pytest.mark.slow
def test_submitit_local_executor_runs_a_point(tmp_path, monkeypatch):
    """The submitit path (as on SLURM) with submitit's local executor, from a folder where launch/ is not
    importable: the job gets run_point by value."""
    path = tiny_sweep(tmp_path, grid={"seed": [3]}, executor={"timeout_min": 15})
    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "sweep"
    assert sweep_lib.main([f"--sweep={path}", f"--sweep_dir={sweep_dir}", "--backend=submitit_local"]) == 0
    results = json.loads((sweep_dir / "seed=3" / "results.json").read_text())
    assert results["steps"] == 2 and 0.0 <= results["image_auroc"] <= 1.0
    assert json.loads((sweep_dir / "seed=3" / "config.json").read_text())["seed"] == 3
    assert list((sweep_dir / "submitit").glob("*/*_result.pkl")), "submitit wrote no job result"
    assert sweep_lib.main([f"--sweep={path}", f"--sweep_dir={sweep_dir}", "--backend=submitit_local"]) == 0
    jobs = [p.name for p in (sweep_dir / "submitit").iterdir() if p.name != "%j"]  # %j: submitit's own folder
    assert len(jobs) == 1, f"a finished point was submitted again: {jobs}"
