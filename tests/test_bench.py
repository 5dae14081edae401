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
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
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
    run(
        "train_step.py",
        "--sizes",
        "32",
        "--batch",
        "4",
        "--steps",
        "2",
        "--variants",
        "jax,torch",
        "--out",
        str(tmp_path / "t.json"),
    )
    rows = {r["variant"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert set(rows) == {"jax", "torch"} and rows["torch"]["vs_torch"] == 1.0
    assert rows["jax"]["flops_per_step"] > 1e8 and rows["jax"]["gflops"] > 0


@pytest.mark.slow
def test_step_parts_times_the_step_and_its_parts(tmp_path):
    run(
        "step_parts.py",
        "--config",
        "configs/cps_cpu.py",
        "--set",
        "data.image_size=32",
        "--set",
        "train.batch_size=8",
        "--set",
        "model.head=(32,)",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--out",
        str(tmp_path / "p.json"),
    )
    record = json.loads((tmp_path / "p.json").read_text())
    rows = {r["part"]: r for r in record["rows"]}
    assert record["meta"]["size"] == 32 and record["meta"]["batch"] == 8
    assert {"whole step", "data part: sources, jitter, edit, labels", "network update alone"} <= set(rows)
    assert rows["whole step"]["of_whole_step"] == 1.0 and all(r["ms"] > 0 for r in rows.values())
    assert rows["data part: sources, jitter, edit, labels"]["ms"] < rows["network update alone"]["ms"]


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_at_small_size(tmp_path):
    out = run(
        "gpu.py",
        "--size",
        "64",
        "--batches",
        "8",
        "--dtypes",
        "float32,bfloat16",
        "--steps",
        "2",
        "--long_steps",
        "3",
        "--members",
        "2",
        "--loc_repeats",
        "1",
        "--matmul_n",
        "256",
        "--per_call",
        "1,2",
        "--out",
        str(tmp_path / "gpu.json"),
    )
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert {(r["batch"], r["dtype"], r["steps_per_call"]) for r in record["rows"]} == {
        (8, dtype, k) for dtype in ("float32", "bfloat16") for k in (1, 2)
    }
    by = {(r["dtype"], r["steps_per_call"]): r for r in record["rows"]}
    assert by[("float32", 2)]["flops_per_step"] == by[("float32", 1)]["flops_per_step"]  # per step, not per call
    for row in record["rows"]:  # counted FLOPs: 3 forward passes less the stem's input gradient (test_flops.py)
        assert row["flops_per_step"] > 2.5 * 2 * 8 * 0.148e9 and 0 < row["utilisation"] and row["matmul_tflops"] > 0
    assert record["long_run"]["steps"] == 3 and record["long_run"]["paper_category_hours"] > 0
    assert record["ensemble"]["members"] == 2 and record["ensemble"]["images_per_s"] > 0
    assert record["localization"]["patches"] == 81 and record["localization"]["images_per_s"] > 0
    assert "paper-length category" in out and "Vmapped ensemble" in (tmp_path / "gpu.md").read_text()


def test_peer_summary_averages_checkpoints_every_seed_has():
    """The side-by-side summary's sla_jax curve is a mean over seeds only at the steps all seeds evaluated
    (seed 0 of the cookies had 250/500/750, later seeds 250/375/.../750), and the criteria read that curve."""
    from bench.peer_cutpaste import summarize

    def sla(seed, curve):
        return {
            "category": "c",
            "impl": "sla_jax",
            "seed": seed,
            "image_auroc": curve["750"][0],
            "train_seconds": curve["750"][1],
            "checkpoint_auroc": {k: a for k, (a, _) in curve.items()},
            "checkpoint_seconds": {k: t for k, (_, t) in curve.items()},
        }

    records = [
        {"category": "c", "impl": "pytorch-cutpaste", "seed": s, "image_auroc": a, "train_seconds": t}
        for s, a, t in [(0, 0.80, 1000.0), (1, 0.70, 1200.0)]
    ]
    records += [
        sla(0, {"250": (0.60, 300.0), "500": (0.76, 600.0), "750": (0.80, 900.0)}),
        sla(1, {"250": (0.70, 320.0), "375": (0.99, 450.0), "500": (0.74, 640.0), "750": (0.78, 960.0)}),
    ]
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
    records = [
        {"category": "c", "impl": "pytorch-cutpaste", "seed": s, "image_auroc": a, "train_seconds": 1.0}
        for s, a in enumerate(port)
    ]
    records += [
        {
            "category": "c",
            "impl": "sla_jax",
            "seed": s,
            "image_auroc": a,
            "train_seconds": 1.0,
            "checkpoint_auroc": {"750": a},
            "checkpoint_seconds": {"750": 1.0},
        }
        for s, a in enumerate(sla)
    ]
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


def test_peer_port_runs_adopted_from_an_earlier_out(tmp_path):
    """--port_from: the earlier out's port records are copied and its run folders linked, a record already in
    the new out is kept, sla_jax's records are not taken, and a second call adopts nothing."""
    from bench.peer_cutpaste import adopt_port_runs

    old, new = tmp_path / "peer", tmp_path / "peer_option"
    for name in ["c_pytorch-cutpaste_s0", "c_pytorch-cutpaste_s1", "c_sla_jax_s0"]:
        (old / "records").mkdir(parents=True, exist_ok=True)
        (old / "records" / f"{name}.json").write_text(json.dumps({"name": name}))
        write_scores_file(old / "runs" / name, ["a.png", "b.png"], [0, 1], [0.1, 0.9])
    (new / "records").mkdir(parents=True)
    (new / "records" / "c_pytorch-cutpaste_s1.json").write_text('{"name": "kept"}')
    adopted = adopt_port_runs(str(old), str(new), categories=["c"], seeds=[0, 1, 2])
    assert adopted == [str(new / "records" / "c_pytorch-cutpaste_s0.json")]
    assert json.loads(Path(adopted[0]).read_text()) == {"name": "c_pytorch-cutpaste_s0"}
    assert json.loads((new / "records" / "c_pytorch-cutpaste_s1.json").read_text()) == {"name": "kept"}
    link = new / "runs" / "c_pytorch-cutpaste_s0"
    assert link.is_symlink() and link.resolve() == (old / "runs" / link.name).resolve()
    assert (link / "scores.csv").read_text().startswith("path,defect_type,label,score")
    assert not (new / "records" / "c_sla_jax_s0.json").exists()
    assert adopt_port_runs(str(old), str(new), categories=["c"], seeds=[0, 1, 2]) == []


def write_scores_file(workdir, paths, labels, scores):
    """A run folder's ``scores.csv``, as sla_jax.evaluate writes it."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = ["path,defect_type,label,score"] + [
        f"{p},{'crack' if y else 'good'},{y},{float(s)!r}" for p, y, s in zip(paths, labels, scores)
    ]
    (workdir / "scores.csv").write_text("\n".join(rows) + "\n")


def test_auroc_spread_against_sklearn_and_hanley_mcneil(tmp_path):
    """bench/auroc_spread.py: the AUROC equals scikit-learn's (ties included), the stratified bootstrap's sd
    is near Hanley and McNeil's closed-form standard error, and the command line writes its table."""
    from sklearn.metrics import roc_auc_score

    from bench.auroc_stats import auroc_spread

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
    write_scores_file(workdir, [f"x{i}.png" for i in range(len(labels))], labels, scores)
    out = run("auroc_spread.py", "--workdir", str(workdir), "--resamples", "200", "--out", str(tmp_path / "o"))
    record = json.loads((tmp_path / "o" / "auroc_spread.json").read_text())
    assert record["runs"][0]["image_auroc"] == pytest.approx(a, abs=1e-12) and "bootstrap sd" in out
    missing = subprocess.run(
        [sys.executable, str(REPO / "bench" / "auroc_spread.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode != 0 and "scores.csv not found" in missing.stderr


def delong_sd(a, b, labels):
    """DeLong, DeLong and Clarke-Pearson's (1988) standard error of AUROC(a) − AUROC(b) on the same images."""
    pos, neg = labels == 1, labels == 0

    def components(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = components(a), components(b)
    s10, s01 = np.cov(np.stack([a10, b10])), np.cov(np.stack([a01, b01]))
    c = np.array([1.0, -1.0])
    return float(np.sqrt(c @ s10 @ c / pos.sum() + c @ s01 @ c / neg.sum()))


def test_paired_auroc_difference_against_sklearn_and_delong(tmp_path):
    """bench/auroc_spread.py --pair: the difference is scikit-learn's AUROC difference, its bootstrap sd is
    near DeLong's closed form for correlated AUROCs, it turns sign when A and B swap, ignores monotone
    rescaling of either side, is 0 with p = 1 for a run against itself; runs are matched by image path."""
    from sklearn.metrics import roc_auc_score

    from bench.auroc_stats import aligned_scores, auroc_spread, paired_difference

    rng = np.random.default_rng(1)
    n1, n0 = 150, 100
    labels = np.r_[np.ones(n1, int), np.zeros(n0, int)]
    shared = rng.normal(size=n1 + n0)  # what both models see in an image: the source of the pairing
    a = 0.9 * labels + shared + 0.6 * rng.normal(size=n1 + n0)
    b = 0.6 * labels + shared + 0.6 * rng.normal(size=n1 + n0)
    got = paired_difference(a, b, labels, seed=0, resamples=4000)
    want = roc_auc_score(labels, a) - roc_auc_score(labels, b)
    assert got["difference"] == pytest.approx(want, abs=1e-12) and got["pairs"] == 1
    assert got["bootstrap_sd"] == pytest.approx(delong_sd(a, b, labels), rel=0.08)
    unpaired = np.hypot(*(auroc_spread(s, labels, seed=0, resamples=1000)["bootstrap_sd"] for s in (a, b)))
    assert got["bootstrap_sd"] < 0.7 * unpaired  # the luck both sides share cancels
    assert got["ci95"][0] < want < got["ci95"][1]
    swapped = paired_difference(np.exp(b), 3 * a - 1, labels, seed=0, resamples=4000)
    assert swapped["difference"] == pytest.approx(-want, abs=1e-12)
    assert swapped["bootstrap_sd"] == pytest.approx(got["bootstrap_sd"], rel=1e-9)
    same = paired_difference(a, a, labels, seed=0, resamples=500)
    assert same["difference"] == 0 and same["bootstrap_sd"] == 0 and same["p_two_sided"] == 1.0
    two = paired_difference(np.stack([a, b]), np.stack([b, b]), labels, seed=0, resamples=500)
    assert two["difference"] == pytest.approx(want / 2, abs=1e-12) and two["per_pair"][1] == 0

    paths = [f"/data/cat/test/{'crack' if y else 'good'}/{i:03d}.png" for i, y in enumerate(labels)]
    order = rng.permutation(n1 + n0)
    write_scores_file(tmp_path / "a", paths, labels, a)
    write_scores_file(tmp_path / "b", [paths[i] for i in order], labels[order], b[order])
    scores_RxN, labels_N = aligned_scores([str(tmp_path / "a"), str(tmp_path / "b")])
    assert roc_auc_score(labels_N, scores_RxN[1]) == pytest.approx(roc_auc_score(labels, b), abs=1e-12)
    out = run(
        "auroc_spread.py",
        f"--pair={tmp_path / 'a'},{tmp_path / 'b'}",
        "--resamples",
        "300",
        "--out",
        str(tmp_path / "o"),
    )
    record = json.loads((tmp_path / "o" / "auroc_spread.json").read_text())
    assert record["pairs"][0]["difference"] == pytest.approx(want, abs=1e-9) and "p (two-sided)" in out
    write_scores_file(tmp_path / "c", paths[:-1], labels[:-1], a[:-1])
    with pytest.raises(ValueError, match="other test images"):
        aligned_scores([str(tmp_path / "a"), str(tmp_path / "c")])
    bad = subprocess.run(
        [sys.executable, "bench/auroc_spread.py", f"--pair={tmp_path / 'a'}"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "two run folders" in bad.stderr


def test_pair_splits_at_the_comma_between_two_folders(tmp_path):
    """A sweep's run folders hold commas (``seed=0,x=1``): --pair=A,B splits where both halves are folders."""
    from bench.auroc_spread import split_pair

    a, b = tmp_path / "seed=0,x=1", tmp_path / "seed=0"
    a.mkdir(), b.mkdir()
    assert split_pair(f"{a},{b}") == [str(a), str(b)] and split_pair(f"{b},{a}") == [str(b), str(a)]
    assert split_pair("p,q") == ["p", "q"]  # one comma: split there, missing folders are reported later
    with pytest.raises(ValueError, match="two run folders"):
        split_pair(f"{tmp_path}/u,v,w")


def test_port_worker_writes_scores_keyed_by_the_original_file(tmp_path):
    """bench/peer_cutpaste_port.py's scores.csv names each test image by its own file (not the .png view the
    port reads) and labels it by its folder, in sla_jax's scores.csv columns."""
    from bench.peer_cutpaste_port import image_view, write_scores
    from sla_jax.outputs.files import read_scores

    category = tmp_path / "cat"
    for split, name in [("train/good", "a.jpg"), ("test/good", "g1.jpg"), ("test/crack", "c1.jpg")]:
        (category / split).mkdir(parents=True, exist_ok=True)
        (category / split / name).write_bytes(b"x")
    counts = image_view(category, tmp_path / "view" / "cat")
    assert counts == {"train/good": 1, "test/crack": 1, "test/good": 1}
    names = sorted((tmp_path / "view" / "cat" / "test").glob("*/*.png"))
    write_scores(names, [2.5, 0.5], tmp_path / "scores.csv")
    scores, labels, types, paths = read_scores(str(tmp_path / "scores.csv"), with_paths=True)
    assert paths == [str((category / "test/crack/c1.jpg").resolve()), str((category / "test/good/g1.jpg").resolve())]
    assert labels.tolist() == [1, 0] and types == ["crack", "good"] and scores.tolist() == [2.5, 0.5]
