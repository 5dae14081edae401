"""sla_jax against the PyTorch CutPaste port (Runinho/pytorch-cutpaste), side by side on the same data and budget.

For every category under ``--root`` and every seed, runs the port (from the checkout ``--peer_src``, under
its own Python ``--peer_python``, through ``bench/peer_cutpaste_port.py``) and sla_jax (``python -m
sla_jax.train --config=CONFIG``), each in its own process, alternately (port first for even seeds, sla_jax
first for odd ones), at the same image size, steps, batch (``--batch`` originals + as many scars) and
seed. Each run writes one JSON record: image AUROC, pretext accuracy at ``--at_steps`` (the mean over the
``--window`` training steps ending there), training wall time (and the wall time at each of those steps),
the process's wall time, its peak RSS and the peak PSS of its process tree (the port's DataLoader
workers included). sla_jax's checkpoints at ``--eval_steps`` are evaluated too (``python -m
sla_jax.evaluate --step=N``), which gives its AUROC against wall time.

Resumable: a run whose record exists is skipped. Writes ``OUT/records/*.json``, ``OUT/peer.md`` (a table
per category, each side's mean AUROC with its sample sd over seeds and Welch's p of the difference, and the
two criteria: mean AUROC at no more wall time, and the wall-time fraction at which sla_jax reaches the
port's mean AUROC; and the difference paired on the test images over the seeds where both sides left
per-image scores, a port run's saved model scored afresh if it has none) and ``OUT/peer.png`` (AUROC
against training wall time).

    python bench/peer_cutpaste.py --peer_src=SCRATCH/pytorch-cutpaste --peer_python=SCRATCH/venv/bin/python \\
        --root=../shared/data --seeds=0,1,2 --out=runs/peer

An sla_jax option against the same port runs: ``--set=KEY=VALUE --port_from=runs/peer --out=runs/peer_KEY``
(the port's records and run folders of ``--port_from`` are reused, not trained again).

The port needs ``torch==2.14.1 torchvision==0.29.1 scikit-learn pandas tqdm tensorboard matplotlib`` in its
venv (docs/results.md); its code is used as it is, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.auroc_stats import aligned_scores, paired_difference  # noqa: E402
from launch.categories import discover  # noqa: E402
from sla_jax.common.runtime import source_commit  # noqa: E402

PORT_WORKER = os.path.join(common.REPO, "bench", "peer_cutpaste_port.py")
AUROC_TOLERANCE = 1e-6  # float32 rounding of an AUROC, far below one pair in a test set's count


class Measured:
    """A child process run to its end: wall seconds, its own peak RSS (``wait4``) and the peak PSS of its
    process tree, sampled every second."""

    def __init__(self, command: list[str], *, log: str, cwd: str = common.REPO, env: dict | None = None):
        import psutil

        started = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
            peak = {"pss": 0}
            done = threading.Event()

            def sample():
                root = psutil.Process(proc.pid)
                while not done.wait(1.0):
                    try:
                        tree = [root, *root.children(recursive=True)]
                        total = sum(p.memory_full_info().pss for p in tree)
                    except psutil.Error:
                        continue
                    peak["pss"] = max(peak["pss"], total)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            done.set()
            sampler.join()
            proc.returncode = os.waitstatus_to_exitcode(status)
        self.returncode = proc.returncode
        self.seconds = time.perf_counter() - started
        self.peak_rss_gb = usage.ru_maxrss / 2**20
        self.peak_tree_pss_gb = peak["pss"] / 2**30
        self.log = log


def last_json_line(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result line in {path}")
    return json.loads(lines[-1])


def port_command(args, category, run_dir: str, *options: str) -> list[str]:
    """``bench/peer_cutpaste_port.py`` under the port's Python, on ``category`` at ``--size``, in ``run_dir``."""
    return [
        args.peer_python,
        PORT_WORKER,
        f"--peer_src={args.peer_src}",
        f"--category_dir={os.path.join(category.root, category.category)}",
        f"--run_dir={run_dir}",
        f"--size={args.size}",
        *options,
    ]


def run_port(args, category, seed: int, run_dir: str) -> dict:
    os.makedirs(run_dir, exist_ok=True)
    command = port_command(
        args,
        category,
        run_dir,
        f"--steps={args.steps}",
        f"--batch={args.batch}",
        f"--seed={seed}",
        f"--workers={args.port_workers}",
        f"--at_steps={args.at_steps}",
        f"--window={args.window}",
    )
    done = Measured(command, log=os.path.join(run_dir, "run.log"))
    if done.returncode:
        raise RuntimeError(f"the port failed ({done.returncode}); see {done.log}")
    record = last_json_line(done.log)
    return {
        **record,
        "process_seconds": done.seconds,
        "peak_rss_gb": done.peak_rss_gb,
        "peak_tree_pss_gb": done.peak_tree_pss_gb,
    }


def port_scores_dir(args, category, run_dir: str) -> str | None:
    """The folder holding the port run's ``scores.csv``: the run's own, or ``RUN_DIR/rescore`` where its saved
    model is scored now (runs from before the worker wrote scores). None when neither can be had."""
    if os.path.exists(os.path.join(run_dir, "scores.csv")):
        return run_dir
    rescore = os.path.join(run_dir, "rescore")
    if os.path.exists(os.path.join(rescore, "scores.csv")):
        return rescore
    models = sorted(Path(run_dir, "models").glob("model-*.tch"))
    if len(models) != 1:
        return None
    os.makedirs(rescore, exist_ok=True)
    done = Measured(port_command(args, category, rescore, f"--model={models[0]}"), log=os.path.join(rescore, "run.log"))
    if done.returncode:
        raise RuntimeError(f"scoring {models[0]} failed ({done.returncode}); see {done.log}")
    return rescore


def paired_on_test_images(args, category, out: str, seeds: list[int]) -> dict | None:
    """sla_jax − port AUROC on the category's test images, over the seeds where both runs left scores
    (``bench/auroc_stats.py``'s paired stratified bootstrap)."""
    dirs = []
    for seed in seeds:
        sla = os.path.join(out, "runs", f"{category.name}_sla_jax_s{seed}")
        port = os.path.join(out, "runs", f"{category.name}_pytorch-cutpaste_s{seed}")
        port_dir = port_scores_dir(args, category, port) if os.path.isdir(port) else None
        if port_dir and os.path.exists(os.path.join(sla, "scores.csv")):
            dirs.append((seed, sla, port_dir))
    if not dirs:
        return None
    scores_RxN, labels_N = aligned_scores([d for _, sla, port in dirs for d in (sla, port)])
    result = paired_difference(scores_RxN[0::2], scores_RxN[1::2], labels_N, seed=0)
    return {"seeds": [seed for seed, _, _ in dirs], **result}


def adopt_port_runs(port_from: str, out: str, *, categories: list[str], seeds: list[int]) -> list[str]:
    """Reuse the port's runs of an earlier ``--out`` (``port_from``): copy each of its port records that
    ``out`` lacks into ``out/records`` and link its run folder (saved model, per-image scores) into
    ``out/runs``, so that an sla_jax option is compared with the same port runs, paired on the same test
    images, without training the port again. Returns the records adopted."""
    adopted = []
    for category in categories:
        for seed in seeds:
            name = f"{category}_pytorch-cutpaste_s{seed}"
            source, target = Path(port_from, "records", f"{name}.json"), Path(out, "records", f"{name}.json")
            if not source.exists() or target.exists():
                continue
            target.write_bytes(source.read_bytes())
            run_dir, link = Path(port_from, "runs", name).resolve(), Path(out, "runs", name)
            if run_dir.is_dir() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(run_dir, target_is_directory=True)
            adopted.append(str(target))
    return adopted


def window_accuracy(metrics_path: str, at_steps: list[int], window: int) -> tuple[dict, dict]:
    """Mean accuracy over the ``window`` steps ending at each step (from window-mean log records) and the
    wall seconds at each step."""
    with open(metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    accuracy, seconds = {}, {}
    for step in at_steps:
        inside = [r for r in records if step - window < r["step"] <= step]
        spans = [r["step"] - prev["step"] for prev, r in zip([{"step": step - window}] + inside[:-1], inside)]
        accuracy[str(step)] = (sum(r["accuracy"] * n for r, n in zip(inside, spans)) / sum(spans)) if inside else None
        seconds[str(step)] = next((r.get("seconds") for r in records if r["step"] == step), None)
    return accuracy, seconds


def run_sla_jax(args, category, seed: int, workdir: str) -> dict:
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    overrides = [
        f"--config.data.root={category.root}",
        f"--config.data.category={category.category}",
        f"--config.seed={seed}",
        f"--config.data.image_size={args.size}",
        f"--config.train.steps={args.steps}",
        f"--config.train.batch_size={2 * args.batch}",
        "--config.transform.pairing=paired",
        *args.set,
    ]
    command = [sys.executable, "-m", "sla_jax.train", f"--config={args.config}", f"--workdir={workdir}", *overrides]
    done = Measured(command, log=workdir + ".log")
    if done.returncode:
        raise RuntimeError(f"sla_jax failed ({done.returncode}); see {done.log}")
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(workdir, "timing.json"), encoding="utf-8") as f:
        timing = json.load(f)
    at_steps = [int(s) for s in args.at_steps.split(",") if int(s) <= args.steps]
    accuracy, seconds_at = window_accuracy(os.path.join(workdir, "metrics.jsonl"), at_steps, args.window)
    checkpoints = {}
    for step in [int(s) for s in args.eval_steps.split(",") if s and int(s) < args.steps]:
        proc = subprocess.run(
            [sys.executable, "-m", "sla_jax.evaluate", f"--workdir={workdir}", f"--step={step}"],
            cwd=common.REPO,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            raise RuntimeError(f"evaluating step {step} of {workdir} failed: {proc.stderr[-2000:]}")
        with open(os.path.join(workdir, "steps", str(step), "results.json"), encoding="utf-8") as f:
            checkpoints[str(step)] = json.load(f)["image_auroc"]
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    with open(metrics_path, encoding="utf-8") as f:
        logged = {r["step"]: r.get("seconds") for r in map(json.loads, filter(str.strip, f))}
    return {
        "impl": "sla_jax",
        "category": category.category,
        "seed": seed,
        "size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "config": args.config,
        "overrides": overrides,
        "image_auroc": results["image_auroc"],
        "accuracy": accuracy,
        "train_seconds_at": seconds_at,
        "checkpoint_auroc": {**checkpoints, str(args.steps): results["image_auroc"]},
        "checkpoint_seconds": {s: logged.get(int(s)) for s in [*checkpoints, str(args.steps)]},
        "train_seconds": timing["train_seconds"],
        "seconds": timing["seconds"],
        "process_seconds": done.seconds,
        "peak_rss_gb": done.peak_rss_gb,
        "peak_tree_pss_gb": done.peak_tree_pss_gb,
    }


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def sample_sd(values):
    return statistics.stdev(values) if len(values) > 1 else None


def welch_p(a, b):
    """Two-sided p of Welch's t-test between two sides' per-seed AUROCs (None below two seeds a side, or when
    neither side varies)."""
    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarize(records: list[dict]) -> dict:
    """Per category: each side's mean AUROC (and its spread over seeds, and Welch's p of the difference) and
    wall time, and the two criteria of the comparison."""
    out = {}
    for name in sorted({r["category"] for r in records}):
        port = [r for r in records if r["category"] == name and r["impl"] == "pytorch-cutpaste"]
        sla = [r for r in records if r["category"] == name and r["impl"] == "sla_jax"]
        port_aurocs, sla_aurocs = [r["image_auroc"] for r in port], [r["image_auroc"] for r in sla]
        entry = {
            "port_auroc": mean(port_aurocs),
            "port_auroc_sd": sample_sd(port_aurocs),
            "port_train_seconds": mean([r["train_seconds"] for r in port]),
            "sla_jax_auroc": mean(sla_aurocs),
            "sla_jax_auroc_sd": sample_sd(sla_aurocs),
            "sla_jax_train_seconds": mean([r["train_seconds"] for r in sla]),
            "seeds": len(sla),
            "port_seeds": len(port),
            "welch_p": welch_p(sla_aurocs, port_aurocs),
        }
        # a mean over seeds only at steps every seed evaluated, so that no point averages fewer seeds
        steps = sorted(set.intersection(*({int(s) for s in r.get("checkpoint_auroc", {})} for r in sla))) if sla else []
        curve = [
            {
                "step": s,
                "auroc": mean([r["checkpoint_auroc"].get(str(s)) for r in sla]),
                "seconds": mean([r["checkpoint_seconds"].get(str(s)) for r in sla]),
            }
            for s in steps
        ]
        entry["sla_jax_curve"] = curve
        if port and sla and entry["port_train_seconds"]:
            budget = entry["port_train_seconds"]
            within = [c for c in curve if c["seconds"] is not None and c["seconds"] <= budget]
            best = max(within, key=lambda c: c["auroc"]) if within else None
            entry["sla_jax_auroc_within_port_time"] = best["auroc"] if best else None
            # AUROCs are ratios of pair counts; sla_jax's are float32, the port's float64
            entry["at_no_more_wall_time"] = bool(best and best["auroc"] >= entry["port_auroc"] - AUROC_TOLERANCE)
            reach = next(
                (c for c in curve if c["auroc"] is not None and c["auroc"] >= entry["port_auroc"] - AUROC_TOLERANCE),
                None,
            )
            entry["reaches_port_auroc_at_fraction"] = reach["seconds"] / budget if reach and reach["seconds"] else None
        out[name] = entry
    return out


def fmt(value, spec=".3f"):
    return "–" if value is None else format(value, spec)


def markdown(records: list[dict], summary: dict, meta: dict) -> str:
    lines = [
        f"# sla_jax against pytorch-cutpaste ({meta['size']} px, {meta['steps']} steps of {meta['batch']} "
        f"originals + {meta['batch']} scars, from scratch)",
        "",
        f"sla_jax: `{meta['config']}` {' '.join(meta['set'])}; port: `{meta['peer_src']}` (commit "
        f"{meta['peer_commit']}), {meta['port_workers']} DataLoader workers"
        f"{'; its runs reused from `' + meta['port_from'] + '`' if meta.get('port_from') else ''}. "
        f"sla_jax commit {meta['commit']}. "
        f"{meta['machine']['cpu']}, {meta['machine']['cpu_count']} cores. Command: `{meta['command']}`",
        "",
    ]
    at = [s for s in meta["at_steps"].split(",")]
    for name, entry in summary.items():
        lines += [
            f"## {name}",
            "",
            "| run | seed | image AUROC | "
            + " | ".join(f"acc@{s}" for s in at)
            + " | train s | process s | peak RSS GB | peak tree PSS GB |",
            "|" + " --- |" * 2 + " ---: |" * (len(at) + 5),
        ]
        for r in sorted((r for r in records if r["category"] == name), key=lambda r: (r["impl"], r["seed"])):
            lines.append(
                f"| {r['impl']} | {r['seed']} | {fmt(r['image_auroc'])} | "
                + " | ".join(fmt(r["accuracy"].get(s), ".2f") for s in at)
                + f" | {fmt(r['train_seconds'], '.0f')} | {fmt(r['process_seconds'], '.0f')} | "
                f"{fmt(r['peak_rss_gb'], '.2f')} | {fmt(r['peak_tree_pss_gb'], '.2f')} |"
            )
        lines += [
            "",
            f"Mean image AUROC (sample sd over seeds): port {fmt(entry['port_auroc'])} "
            f"({fmt(entry['port_auroc_sd'], '.4f')}) in {fmt(entry['port_train_seconds'], '.0f')} s of training; "
            f"sla_jax {fmt(entry['sla_jax_auroc'])} ({fmt(entry['sla_jax_auroc_sd'], '.4f')}) in "
            f"{fmt(entry['sla_jax_train_seconds'], '.0f')} s. Welch's t-test of the difference: "
            f"p = {fmt(entry['welch_p'], '.2f')}.",
        ]
        paired = entry.get("paired")
        if paired:
            lines.append(
                f"Paired on the {paired['defective']} + {paired['good']} test images (seeds "
                f"{', '.join(map(str, paired['seeds']))}; each resample scores both sides on the same "
                f"images): sla_jax − port = {paired['difference']:+.4f}, 95 % interval "
                f"{paired['ci95'][0]:+.4f} to {paired['ci95'][1]:+.4f}, p = {paired['p_two_sided']:.3f}."
            )
        if entry["sla_jax_curve"]:
            lines.append(
                "sla_jax's checkpoints (mean over seeds): "
                + ", ".join(
                    f"step {c['step']}: {fmt(c['auroc'])} at {fmt(c['seconds'], '.0f')} s"
                    for c in entry["sla_jax_curve"]
                )
                + "."
            )
        if "at_no_more_wall_time" in entry:
            frac = entry["reaches_port_auroc_at_fraction"]
            lines.append(
                f"Best sla_jax checkpoint within the port's training time: "
                f"{fmt(entry['sla_jax_auroc_within_port_time'])} "
                f"({'at least' if entry['at_no_more_wall_time'] else 'below'} the port's mean); "
                f"first checkpoint reaching the port's mean AUROC: "
                + (f"at {100 * frac:.0f} % of the port's training time." if frac else "none.")
            )
        lines.append("")
    return "\n".join(lines)


def plot(records: list[dict], summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in records:
            if r["category"] != name:
                continue
            if r["impl"] == "sla_jax":
                steps = sorted(r["checkpoint_auroc"], key=int)
                ax.plot(
                    [r["checkpoint_seconds"][s] for s in steps],
                    [r["checkpoint_auroc"][s] for s in steps],
                    color="tab:blue",
                    alpha=0.35,
                    marker=".",
                )
            else:
                ax.scatter([r["train_seconds"]], [r["image_auroc"]], color="tab:red", marker="x")
        curve = summary[name]["sla_jax_curve"]
        ax.plot(
            [c["seconds"] for c in curve],
            [c["auroc"] for c in curve],
            color="tab:blue",
            lw=2.2,
            marker="o",
            label="sla_jax, mean of seeds (checkpoints)",
        )
        if summary[name]["port_auroc"] is not None:
            ax.axhline(summary[name]["port_auroc"], color="tab:red", ls="--", lw=1, label="pytorch-cutpaste, mean")
            ax.axvline(summary[name]["port_train_seconds"], color="tab:red", ls=":", lw=1)
        ax.set(title=name, xlabel="training wall time (s)", ylabel="image AUROC")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peer_src", required=True, help="checkout of Runinho/pytorch-cutpaste (kept in a scratch folder)"
    )
    parser.add_argument("--peer_python", required=True, help="python of a venv with the port's requirements")
    parser.add_argument("--root", action="append", required=True, help="a category, a folder of them or of datasets")
    parser.add_argument("--category", action="append", default=[], help="only these categories (repeatable)")
    parser.add_argument("--config", default="configs/cps_cpu.py")
    parser.add_argument("--set", action="append", default=[], help="extra --config.KEY=VALUE for sla_jax")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--batch", type=int, default=32, help="originals per step; as many edited copies join them")
    parser.add_argument("--port_workers", type=int, default=2)
    parser.add_argument("--at_steps", default="250,500,750")
    parser.add_argument("--eval_steps", default="250,500", help="sla_jax checkpoints evaluated besides the last")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--only", choices=["both", "port", "sla_jax"], default="both")
    parser.add_argument("--out", default="runs/peer")
    parser.add_argument(
        "--port_from",
        help="an earlier --out whose port runs stand in for the port's here "
        "(records copied, run folders linked; the port is not trained again)",
    )
    args = parser.parse_args()
    args.set = [s if s.startswith("--") else f"--config.{s}" for s in args.set]
    args.config = os.path.abspath(args.config)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "records"), exist_ok=True)
    categories = discover(args.root, only=args.category)
    seeds = [int(s) for s in args.seeds.split(",")]
    peer_commit = (
        subprocess.run(
            ["git", "-C", args.peer_src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "unknown"
    )
    if args.port_from:
        for path in adopt_port_runs(args.port_from, out, categories=[c.name for c in categories], seeds=seeds):
            print(f"port run adopted from {args.port_from}: {path}", flush=True)
    meta = {
        "size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "config": os.path.relpath(args.config, common.REPO),
        "set": args.set,
        "peer_src": args.peer_src,
        "peer_commit": peer_commit,
        "port_workers": args.port_workers,
        "port_from": args.port_from,
        "commit": source_commit(),
        "machine": common.machine(),
        "at_steps": args.at_steps,
        "command": " ".join(["python bench/peer_cutpaste.py", *sys.argv[1:]]),
    }
    for category in categories:
        for seed in seeds:
            order = ["pytorch-cutpaste", "sla_jax"] if seed % 2 == 0 else ["sla_jax", "pytorch-cutpaste"]
            for impl in order:
                if args.only != "both" and impl != {"port": "pytorch-cutpaste", "sla_jax": "sla_jax"}[args.only]:
                    continue
                path = os.path.join(out, "records", f"{category.name}_{impl}_s{seed}.json")
                if os.path.exists(path):
                    continue
                print(f"{time.strftime('%H:%M:%S')} {category.name} seed {seed}: {impl} ...", flush=True)
                run_dir = os.path.join(out, "runs", f"{category.name}_{impl}_s{seed}")
                record = (
                    run_port(args, category, seed, run_dir)
                    if impl == "pytorch-cutpaste"
                    else run_sla_jax(args, category, seed, run_dir)
                )
                record.update(category=category.name, meta={k: meta[k] for k in ("commit", "peer_commit")})
                common.write_json(path, record)
                print(
                    f"  image AUROC {record['image_auroc']:.4f}, training {record['train_seconds']:.0f} s", flush=True
                )
    records = [json.loads(p.read_text()) for p in sorted(Path(out, "records").glob("*.json"))]
    summary = summarize(records)
    for category in categories:
        if category.name in summary:
            seeds_run = sorted({r["seed"] for r in records if r["category"] == category.name})
            summary[category.name]["paired"] = paired_on_test_images(args, category, out, seeds_run)
    common.write_json(os.path.join(out, "peer.json"), {"meta": meta, "summary": summary, "records": records})
    with open(os.path.join(out, "peer.md"), "w", encoding="utf-8") as f:
        f.write(markdown(records, summary, meta))
    plot(records, summary, os.path.join(out, "peer.png"))
    print(markdown(records, summary, meta))


if __name__ == "__main__":
    main()
