"""TensorBoard event files beside ``metrics.jsonl``: the training scalars at every log step, the run's figures
as images, and its settings with its final metrics as hparams, so the runs of a sweep or the members of an
ensemble compare in TensorBoard's HParams view.

Written with tensorboardX (protobuf only, no TensorFlow). A single run writes ``WORKDIR/tensorboard/``; an
ensemble one folder per member, ``WORKDIR/tensorboard/MEMBER``, so each member is a run of its own. Event
files are logs, appended like ``metrics.jsonl``: a resumed run opens a new file that tells TensorBoard to
drop what an earlier file logged after the checkpoint it resumed from (``purge_step``), so each step is
shown once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image


@contextlib.contextmanager
def _torch_hidden():
    """While inside, ``import torch`` fails unless torch is loaded already: tensorboardX's writer imports torch
    when it is installed, only to accept torch tensors (sla_jax passes numpy), and that import cost every
    command line about 2 s of start-up (``docs/performance.md``). Afterwards torch imports as before."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # the import system's own "not importable" marker
    try:
        yield
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


with _torch_hidden():
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams as hparams_summaries

FOLDER = "tensorboard"
FIGURES = (
    "roc.png",
    "scores.png",
    "heatmaps.png",
    "training.png",
    "alpha_sweep.png",
)  # the run's figures, when it drew them
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")  # the final metrics shown in the HParams view


def open_writers(workdir: str, *, members: Sequence[str] = (), resumed_from: int = 0) -> list[SummaryWriter]:
    """One writer per run: ``[WORKDIR/tensorboard]``, or one per ensemble member named in ``members``. After
    a resume from step ``resumed_from``, TensorBoard drops the earlier files' events of later steps."""
    folder = os.path.join(workdir, FOLDER)
    logdirs = [os.path.join(folder, name) for name in members] if members else [folder]
    # tensorboardX names a file by the second it opened it and opens it with "wb": the suffix keeps a writer
    # opened within the same second as an earlier one from emptying the earlier one's file.
    return [
        SummaryWriter(
            logdir,
            purge_step=resumed_from + 1 if resumed_from else None,
            flush_secs=30,
            filename_suffix=f".{uuid.uuid4().hex[:12]}",
        )
        for logdir in logdirs
    ]


def log_record(writers: Sequence[SummaryWriter], record: Mapping) -> None:
    """Every number of one ``metrics.jsonl`` record as a scalar ``train/NAME`` at its step; a list (one value
    per ensemble member) goes to the member's writer, a single number to every writer."""
    step = int(record["step"])
    for name, value in record.items():
        if name == "step" or value is None:
            continue
        values = value if isinstance(value, list) and len(value) == len(writers) else [value] * len(writers)
        for writer, v in zip(writers, values):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                writer.add_scalar(f"train/{name}", float(v), step)
    for writer in writers:
        writer.flush()


def log_figures(writer: SummaryWriter, workdir: str, *, step: int) -> list[str]:
    """The run's PNG figures (:data:`FIGURES`) as images at ``step``; returns the names written."""
    written = []
    for name in FIGURES:
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"figures/{os.path.splitext(name)[0]}", pixels, step, dataformats="HWC")
            written.append(name)
    writer.flush()
    return written


def hparam_values(settings: Mapping) -> dict:
    """Flat settings as the values the HParams view takes: numbers, strings and booleans; a tuple as text."""
    values = {}
    for key, value in settings.items():
        if isinstance(value, (bool, int, float, str)):
            values[key] = value
        elif isinstance(value, (list, tuple)):
            values[key] = str(tuple(value))
    return values


def log_hparams(writer: SummaryWriter, settings: Mapping, results: Mapping, *, step: int) -> dict:
    """The run's settings as one hparams session with its final :data:`METRICS` (``final/NAME``, those that
    are defined); returns the metrics written."""
    metrics = {
        f"final/{name}": float(results[name])
        for name in METRICS
        if isinstance(results.get(name), (int, float)) and np.isfinite(results[name])
    }
    for summary in hparams_summaries(hparam_values(settings), metrics):
        writer.file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)
    writer.flush()
    return metrics


def close(writers: Sequence[SummaryWriter]) -> None:
    for writer in writers:
        writer.close()
