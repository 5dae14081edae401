"""The benchmark scripts run as documented (small sizes, so that they fit in the test run): their tables,
JSON and the references they compare against. Their speed numbers are not asserted (docs/performance.md)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_settings_are_sla_jax_defaults():
    """bench/common.py writes out sla_jax's head and SGD settings (importing sla_jax there would set the
    workers' XLA flags); they must stay the defaults the benchmarks claim to time."""
    from bench import common
    from sla_jax import defaults

    config = defaults.base_config()
    assert common.PAPER_HEAD == tuple(config.model.head)
    assert common.SGD == {k: config.train[k] for k in ("learning_rate", "momentum", "weight_decay")}


def test_gde_benchmark_matches_scikit_learn(tmp_path):
    out = run("gde.py", "--n", "2000", "--m", "500", "--dim", "64", "--repeats", "2", "--out", str(tmp_path / "g.json"))
    record = json.loads((tmp_path / "g.json").read_text())
    assert [r["stage"] for r in record["rows"]] == ["fit", "score", "fit + score"]
    assert record["max_relative_score_difference"] < 1e-4 and record["shrinkage_difference"] < 1e-5
    assert "| fit + score |" in out


@pytest.mark.slow
def test_train_step_benchmark_runs_both_frameworks(tmp_path):
    run("train_step.py", "--sizes", "32", "--batch", "4", "--steps", "2", "--variants", "jax,torch",
        "--out", str(tmp_path / "t.json"))
    rows = {r["variant"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert set(rows) == {"jax", "torch"} and rows["torch"]["vs_torch"] == 1.0
    assert rows["jax"]["flops_per_step"] > 1e8 and rows["jax"]["gflops"] > 0


@pytest.mark.slow
def test_step_parts_times_the_step_and_its_parts(tmp_path):
    run("step_parts.py", "--config", "configs/cps_cpu.py", "--set", "data.image_size=32", "--set", "train.batch_size=8",
        "--set", "model.head=(32,)", "--steps", "1", "--rounds", "1", "--out", str(tmp_path / "p.json"))
    record = json.loads((tmp_path / "p.json").read_text())
    rows = {r["part"]: r for r in record["rows"]}
    assert record["meta"]["size"] == 32 and record["meta"]["batch"] == 8
    assert {"whole step", "data part: sources, jitter, edit, labels", "network update alone"} <= set(rows)
    assert rows["whole step"]["of_whole_step"] == 1.0 and all(r["ms"] > 0 for r in rows.values())
    assert rows["data part: sources, jitter, edit, labels"]["ms"] < rows["network update alone"]["ms"]


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_at_small_size(tmp_path):
    out = run("gpu.py", "--size", "64", "--batches", "8", "--dtypes", "float32,bfloat16", "--steps", "2",
              "--long_steps", "3", "--members", "2", "--loc_repeats", "1", "--out", str(tmp_path / "gpu.json"))
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert {(r["batch"], r["dtype"]) for r in record["rows"]} == {(8, "float32"), (8, "bfloat16")}
    assert record["long_run"]["steps"] == 3 and record["long_run"]["paper_category_hours"] > 0
    assert record["ensemble"]["members"] == 2 and record["ensemble"]["images_per_s"] > 0
    assert record["localization"]["patches"] == 81 and record["localization"]["images_per_s"] > 0
    assert "paper-length category" in out and "Vmapped ensemble" in (tmp_path / "gpu.md").read_text()


def test_peer_summary_averages_checkpoints_every_seed_has():
    """The side-by-side summary's sla_jax curve is a mean over seeds only at the steps all seeds evaluated
    (seed 0 of the cookies had 250/500/750, later seeds 250/375/.../750), and the criteria read that curve."""
    from bench.peer_cutpaste import summarize

    def sla(seed, curve):
        return {"category": "c", "impl": "sla_jax", "seed": seed, "image_auroc": curve["750"][0],
                "train_seconds": curve["750"][1], "checkpoint_auroc": {k: a for k, (a, _) in curve.items()},
                "checkpoint_seconds": {k: t for k, (_, t) in curve.items()}}

    records = [{"category": "c", "impl": "pytorch-cutpaste", "seed": s, "image_auroc": a, "train_seconds": t}
               for s, a, t in [(0, 0.80, 1000.0), (1, 0.70, 1200.0)]]
    records += [sla(0, {"250": (0.60, 300.0), "500": (0.76, 600.0), "750": (0.80, 900.0)}),
                sla(1, {"250": (0.70, 320.0), "375": (0.99, 450.0), "500": (0.74, 640.0), "750": (0.78, 960.0)})]
    entry = summarize(records)["c"]
    assert [c["step"] for c in entry["sla_jax_curve"]] == [250, 500, 750]
    assert entry["sla_jax_curve"][1] == pytest.approx({"step": 500, "auroc": 0.75, "seconds": 620.0})
    assert entry["port_auroc"] == pytest.approx(0.75) and entry["port_train_seconds"] == pytest.approx(1100.0)
    assert entry["sla_jax_auroc"] == pytest.approx(0.79) and entry["at_no_more_wall_time"]
    assert entry["sla_jax_auroc_within_port_time"] == pytest.approx(0.79)
    assert entry["reaches_port_auroc_at_fraction"] == pytest.approx(620.0 / 1100.0)


def test_peer_summary_spread_and_welch_p_against_closed_form():
    """The summary's sample sd per side and Welch's p of the difference, against the closed form (t over the
    pooled standard error, Welch–Satterthwaite degrees of freedom); None where a side has one seed."""
    from scipy import stats

    from bench.peer_cutpaste import summarize

    port, sla = [0.9888, 1.0000, 0.9933], [0.9866, 0.9688, 0.9955, 0.9700]
    records = [{"category": "c", "impl": "pytorch-cutpaste", "seed": s, "image_auroc": a, "train_seconds": 1.0}
               for s, a in enumerate(port)]
    records += [{"category": "c", "impl": "sla_jax", "seed": s, "image_auroc": a, "train_seconds": 1.0,
                 "checkpoint_auroc": {"750": a}, "checkpoint_seconds": {"750": 1.0}} for s, a in enumerate(sla)]
    entry = summarize(records)["c"]
    va, vb = np.var(sla, ddof=1) / len(sla), np.var(port, ddof=1) / len(port)
    t = (np.mean(sla) - np.mean(port)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(sla) - 1) + vb**2 / (len(port) - 1))
    assert entry["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert entry["sla_jax_auroc_sd"] == pytest.approx(np.std(sla, ddof=1))
    assert entry["port_auroc_sd"] == pytest.approx(np.std(port, ddof=1))
    assert (entry["seeds"], entry["port_seeds"]) == (4, 3)
    one = summarize([r for r in records if r["impl"] == "sla_jax" or r["seed"] == 0])["c"]
    assert one["welch_p"] is None and one["port_auroc_sd"] is None


def test_auroc_spread_against_sklearn_and_hanley_mcneil(tmp_path):
    """bench/auroc_spread.py: the AUROC equals scikit-learn's (ties included), the stratified bootstrap's sd
    is near Hanley and McNeil's closed-form standard error, and the command line writes its table."""
    from sklearn.metrics import roc_auc_score

    from bench.auroc_spread import auroc_spread

    rng = np.random.default_rng(0)
    n1, n0 = 120, 80
    scores = np.round(np.r_[rng.normal(1.0, 1.0, n1), rng.normal(0.0, 1.0, n0)], 1)  # rounding makes ties
    labels = np.r_[np.ones(n1, int), np.zeros(n0, int)]
    got = auroc_spread(scores, labels, seed=0, resamples=4000)
    a = roc_auc_score(labels, scores)
    assert got["image_auroc"] == pytest.approx(a, abs=1e-12)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    hanley = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a**2) + (n0 - 1) * (q2 - a**2)) / (n1 * n0))
    assert got["bootstrap_sd"] == pytest.approx(hanley, rel=0.05)
    assert got["ci95"][0] < a < got["ci95"][1] and (got["defective"], got["good"]) == (n1, n0)
    with pytest.raises(ValueError, match="at least 2 defective"):
        auroc_spread([0.1, 0.2, 0.3], [1, 0, 0], seed=0)

    workdir = tmp_path / "run"
    workdir.mkdir()
    rows = ["path,defect_type,label,score"] + [f"x{i}.png,{'crack' if y else 'good'},{y},{s}"
                                                for i, (y, s) in enumerate(zip(labels, scores))]
    (workdir / "scores.csv").write_text("\n".join(rows) + "\n")
    out = run("auroc_spread.py", "--workdir", str(workdir), "--resamples", "200", "--out", str(tmp_path / "o"))
    record = json.loads((tmp_path / "o" / "auroc_spread.json").read_text())
    assert record["runs"][0]["image_auroc"] == pytest.approx(a, abs=1e-12) and "bootstrap sd" in out
    missing = subprocess.run([sys.executable, str(REPO / "bench" / "auroc_spread.py"), "--workdir", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode != 0 and "scores.csv not found" in missing.stderr
