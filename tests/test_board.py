"""TensorBoard event files, read back with TensorBoard's own reader (the tool users open them in)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sla_jax import experiment
from sla_jax.outputs import board
from tests.tiny import tiny_config

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard reads the event files back: the test extra installs it",
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def read_events(logdir: Path):
    """TensorBoard's view of one run folder: scalars {tag: [(step, value)]}, image tags, hparams, metric tags."""
    reader = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    scalars = {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}
    content = reader.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment_info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    hparams = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    return scalars, reader.Tags()["images"], hparams, [m.name.tag for m in experiment_info.metric_infos]


@pytest.mark.slow
def test_a_run_writes_scalars_figures_and_hparams_and_a_resume_shows_each_step_once(tmp_path):
    """Every metrics.jsonl number is a TensorBoard scalar at its step; the figures are images; the settings
    and final metrics are an hparams session. A run stopped after logging past its checkpoint (the logs of
    steps 3 and 4 are older than its newest checkpoint, step 2) resumes, and TensorBoard shows steps 3 and 4
    once, as the resumed run logged them."""
    workdir = tmp_path / "run"
    changes = {
        "train.steps": 4,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        "train.keep_checkpoints": 3,
        "localization.patch_size": 16,
        "localization.stride": 8,
        "localization.train_stride": 8,
    }
    experiment.train_and_evaluate(tiny_config(tmp_path, changes), str(workdir), progress=False)
    shutil.rmtree(workdir / "checkpoints" / "4")  # as if stopped after logging step 4, before its checkpoint
    (workdir / "results.json").unlink()
    results = experiment.train_and_evaluate(tiny_config(tmp_path, changes), str(workdir), progress=False)

    scalars, images, hparams, metrics = read_events(workdir / board.FOLDER)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for name in ("loss", "accuracy", "mean_label", "invalid_fraction", "learning_rate"):
        assert [step for step, _ in scalars[f"train/{name}"]] == [1, 2, 3, 4], name
        np.testing.assert_allclose(
            [v for _, v in scalars[f"train/{name}"]], [r[name] for r in records], rtol=1e-6, err_msg=name
        )
    assert {"figures/roc", "figures/scores", "figures/heatmaps", "figures/training"} <= set(images)
    assert hparams["data.category"] == "washer" and hparams["labels.alpha"] == 10.0
    assert hparams["localization.patch_size"] == 16 and hparams["model.head"] == "(32,)"
    assert "data.root" not in hparams and "train.steps" not in hparams  # paths and free keys are no settings
    assert set(metrics) == {"final/image_auroc", "final/pixel_auroc", "final/pixel_aupro"}
    assert scalars["final/image_auroc"][-1] == (4, pytest.approx(results["image_auroc"], rel=1e-6))


@pytest.mark.slow
def test_tensorboard_off_writes_no_events(tmp_path):
    workdir = tmp_path / "run"
    experiment.train_and_evaluate(
        tiny_config(tmp_path, {"train.steps": 1, "train.tensorboard": False}), str(workdir), progress=False
    )
    assert (workdir / "metrics.jsonl").is_file() and not (workdir / board.FOLDER).exists()


def test_undefined_metrics_and_settings_types(tmp_path):
    """An undefined metric (null in results.json) is left out of the hparams metrics, never written as NaN;
    tuples become text; None and dicts are dropped."""
    assert board.hparam_values({"a": 1, "b": (1, 2), "c": None, "d": {"x": 1}, "e": True}) == {
        "a": 1,
        "b": "(1, 2)",
        "e": True,
    }
    [writer] = board.open_writers(str(tmp_path))
    written = board.log_hparams(
        writer, {"seed": 0}, {"image_auroc": None, "pixel_auroc": 0.9, "pixel_aupro": float("nan")}, step=3
    )
    board.close([writer])
    assert written == {"final/pixel_auroc": 0.9}
    scalars, _, hparams, metrics = read_events(tmp_path / board.FOLDER)
    assert metrics == ["final/pixel_auroc"] and hparams == {"seed": 0.0}
    assert scalars == {"final/pixel_auroc": [(3, pytest.approx(0.9))]}


def test_the_commands_start_without_importing_torch_and_torch_still_imports_after():
    """tensorboardX's writer imports torch when it is installed (about 2 s and 180 MB of start-up on this
    machine): the train command's imports leave it out, and a later ``import torch`` works as before."""
    import subprocess
    import sys

    snippet = (
        "import sys, importlib.util\nimport sla_jax.train, sla_jax.evaluate\n"
        "print('torch' in sys.modules)\n"
        "if importlib.util.find_spec('torch') is not None:\n    import torch; print(torch.zeros(2).sum().item())\n"
        "else:\n    print('no torch installed')\n"
    )
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True).stdout
    loaded, after = out.splitlines()[:2]
    assert loaded == "False", "importing the train command imported torch"
    assert after in ("0.0", "no torch installed")
