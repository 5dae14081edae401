"""launch.categories: category discovery; launch.benchmark: the tables and Table 3 (closed forms on given
results), and real benchmarks of tiny training runs over two demo categories, with their report rendered in
Chromium."""

import csv
import json
from pathlib import Path

import pytest

from launch import benchmark
from launch import sweep as sweep_lib
from launch.categories import discover
from sla_jax.data import synthetic
from sla_jax.outputs import study_plots
from tests.chromium import check_page

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.image_size=32",
    "model.stem=small",
    "model.head=(32,)",
    "train.batch_size=8",
    "train.steps=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "eval.batch_size=64",
]


def make_category(folder: Path) -> None:
    (folder / "train" / "good").mkdir(parents=True)


def test_discover_categories_one_and_two_levels_down(tmp_path):
    for path in ("mvtec/bottle", "mvtec/cable", "shared/mt/magnetic_tile", "shared/ko/kolektorsdd", "shared/x/bottle"):
        make_category(tmp_path / path)
    (tmp_path / "shared" / "notes").mkdir()
    found = discover([str(tmp_path / "mvtec"), str(tmp_path / "shared"), str(tmp_path / "mvtec" / "cable")])
    # The same folder given twice counts once; names that clash take their parent folder's name.
    assert [c.name for c in found] == ["mvtec_bottle", "cable", "kolektorsdd", "magnetic_tile", "x_bottle"]
    mt = next(c for c in found if c.name == "magnetic_tile")
    assert (mt.root, mt.category) == (str(tmp_path / "shared" / "mt"), "magnetic_tile")
    only = discover([str(tmp_path / "shared")], only=["kolektorsdd"])
    assert [c.name for c in only] == ["kolektorsdd"]
    with pytest.raises(sweep_lib.SweepError, match="'nothing'.*not found.*kolektorsdd"):
        discover([str(tmp_path / "shared")], only=["nothing"])
    with pytest.raises(sweep_lib.SweepError, match="no category under"):
        discover([str(tmp_path / "shared" / "notes")])


def test_summary_and_table3_closed_form():
    """Means, sample std over seeds, the mean of per-category means, and RImp = (w − w/o)/w/o."""
    rows = []
    values = {
        ("a", "co", "hard"): [0.6, 0.7],
        ("a", "co", "soft"): [0.8, 0.9],
        ("b", "co", "hard"): [0.5, 0.5],
        ("b", "co", "soft"): [0.55, 0.65],
    }
    for (cat, transform, mode), aucs in values.items():
        for seed, auc in enumerate(aucs):
            rows.append(
                {
                    "name": f"{cat}/{mode}{seed}",
                    "workdir": ".",
                    "category": cat,
                    "transform.name": transform,
                    "labels.mode": mode,
                    "seed": seed,
                    "status": "done",
                    "image_auroc": auc,
                }
            )
    summary = benchmark.summarize(rows)
    assert summary["settings"] == ["CO-hard", "CO-SLA"]
    assert summary["table"]["a"]["CO-SLA"]["mean"] == pytest.approx(0.85)
    assert summary["table"]["a"]["CO-SLA"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert summary["table"]["mean over categories"]["CO-hard"]["mean"] == pytest.approx((0.65 + 0.5) / 2)
    table3 = {r["category"]: r for r in benchmark.ablation(summary)}
    assert table3["a"]["rimp_percent"] == pytest.approx(100 * (0.85 - 0.65) / 0.65)
    assert table3["mean over categories"]["with"] == pytest.approx((0.85 + 0.6) / 2)
    assert table3["mean over categories"]["rimp_percent"] == pytest.approx(100 * (0.725 - 0.575) / 0.575)
    assert benchmark.ablation(benchmark.summarize([{**r, "labels.mode": "soft"} for r in rows[:2]])) is None


def test_sweep_points_are_named_by_the_keys_they_set(tmp_path):
    """A one-at-a-time sweep: each point is named by its own override only, the empty point is the base config,
    and an option set to None stays apart from it. The plot is written with its legend."""
    rows = [
        {
            "name": f"m/{i}",
            "workdir": ".",
            "category": "m",
            **point,
            "seed": seed,
            "status": "done",
            "image_auroc": 0.6 + 0.01 * i + 0.001 * seed,
        }
        for i, point in enumerate(
            [{}, {"data.resize": "bicubic"}, {"train.weight_decay_on": "all"}, {"model.init": None}]
        )
        for seed in (0, 1)
    ]
    summary = benchmark.summarize(rows)
    assert summary["settings"] == ["base config", "resize=bicubic", "weight_decay_on=all", "init=None"]
    assert summary["table"]["m"]["resize=bicubic"]["values"] == pytest.approx([0.61, 0.611])
    study_plots.plot_benchmark(summary, str(tmp_path / "b.png"), title="t")
    assert (tmp_path / "b.png").stat().st_size > 10_000


def demo_root(tmp_path: Path) -> Path:
    return Path(
        synthetic.write_demo_dataset(
            tmp_path / "demo", categories=("weave", "tile"), n_train=12, n_test_good=6, n_test_defect=6
        )
    )


@pytest.mark.slow
def test_benchmark_over_two_categories_tables_rerun_and_report(tmp_path, capsys):
    root, out = demo_root(tmp_path), tmp_path / "bench"
    argv = [
        "--config=configs/cps.py",
        f"--root={root}",
        f"--out={out}",
        f"--set=data.cache_dir={tmp_path / 'tfds'}",
        *(f"--set={s}" for s in TINY),
    ]
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    results = {c: json.loads((out / c / "results.json").read_text()) for c in ("tile", "weave")}
    md = (out / "benchmark.md").read_text()
    assert "2/2 runs finished" in md and "commit: `" in md and "configs/cps.py" in md
    assert f"| tile | {100 * results['tile']['image_auroc']:.1f} |" in md
    mean = 100 * (results["tile"]["image_auroc"] + results["weave"]["image_auroc"]) / 2
    assert f"| **mean over categories** | {mean:.1f} |" in md
    assert md.split("\n")[0] in printed
    lines = (out / "benchmark.csv").read_text().splitlines()
    assert lines[0].startswith("# config=") and "commit=" in lines[0]
    table = list(csv.DictReader(lines[1:]))
    assert {r["category"] for r in table} == {"tile", "weave"}
    assert float(next(r for r in table if r["category"] == "weave")["image_auroc"]) == results["weave"]["image_auroc"]
    # Run again: both runs are skipped, their logs do not grow.
    sizes = {p: p.stat().st_size for p in out.glob("*/train.log")}
    assert benchmark.main(argv) == 0
    assert "2 finished (skipped), 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_size for p in out.glob("*/train.log")} == sizes
    # The first start is kept; --tables_only rewrites the same tables from the folder alone.
    again = (out / "benchmark.md").read_text()
    assert [line for line in again.splitlines() if line.startswith("- started")] == [
        line for line in md.splitlines() if line.startswith("- started")
    ]
    assert benchmark.main(["--tables_only", f"--out={out}"]) == 0
    assert (out / "benchmark.md").read_text() == again
    # Another benchmark's overrides in the same folder are refused.
    assert benchmark.main([*argv, "--set=train.steps=3"]) == 2
    # The benchmark's report links each run's report; every image in both decodes in Chromium.
    page = (out / "report.html").read_text()
    assert 'href="tile/report.html"' in page and "http" not in page.replace("http-equiv", "")
    check = check_page(out / "report.html", screenshot=tmp_path / "benchmark.png")
    assert check["broken"] == [] and check["external"] == [] and check["images"] == 1 + 2 * 2
    run = check_page(out / "weave" / "report.html")
    assert run["broken"] == [] and run["images"] == 3  # ROC, score histogram, training curves
    assert all(w > 100 and h > 100 for w, h in run["sizes"])


@pytest.mark.slow
def test_ablation_sweep_on_two_categories_matches_the_runs(tmp_path):
    """Table 3 from real runs: hard vs soft CO × 2 seeds on two categories; every number in the table
    recomputed from the runs' results.json."""
    root, out = demo_root(tmp_path), tmp_path / "ablation"
    sweep = tmp_path / "sweep.py"
    sweep.write_text(
        f"def get_sweep():\n    return dict(config={str(REPO / 'configs' / 'co.py')!r}, "
        "grid={'labels.mode': ['hard', 'soft'], 'seed': [0, 1]})\n"
    )
    argv = [
        f"--sweep={sweep}",
        f"--root={root}",
        f"--out={out}",
        f"--set=data.cache_dir={tmp_path / 'tfds'}",
        *(f"--set={s}" for s in TINY),
    ]
    assert benchmark.main(argv) == 0

    def auc(cat, mode, seed):
        return json.loads((out / cat / f"mode={mode},seed={seed}" / "results.json").read_text())["image_auroc"]

    summary = json.loads((out / "benchmark_summary.json").read_text())
    rows = {(r["method"], r["category"]): r for r in summary["table3"]}
    for cat in ("tile", "weave"):
        hard = (auc(cat, "hard", 0) + auc(cat, "hard", 1)) / 2
        soft = (auc(cat, "soft", 0) + auc(cat, "soft", 1)) / 2
        assert rows[("CO", cat)]["without"] == pytest.approx(hard) and rows[("CO", cat)]["with"] == pytest.approx(soft)
        assert rows[("CO", cat)]["rimp_percent"] == pytest.approx(100 * (soft - hard) / hard)
    assert "Soft vs hard labels (the paper's Table 3)" in (out / "benchmark.md").read_text()
    check = check_page(out / "report.html")
    assert check["broken"] == [] and check["images"] == 1 + 8 * 2
