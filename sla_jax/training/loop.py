"""The training loop: steps to the end with checkpoints, resume, stop signals, a JSON-lines log and a progress bar.

No config: :func:`fit` takes a compiled step function and plain options, so the single run and the
ensemble use the same loop.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from sla_jax.common.errors import CheckpointWriteError, Interrupted
from sla_jax.common.settings import Section, choice, setting
from sla_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class TrainSettings(Section):
    """``config.train``: the optimizer and its schedule, the loop's checkpoints, logs and dispatch."""

    SECTION = "train"
    batch_size: int = setting(64, "network inputs per step (paired: half of them are sources)")
    steps: int = setting(256 * 256, "256 epochs of 256 steps (CutPaste's epoch)")
    learning_rate: float = setting(0.03)
    momentum: float = setting(0.9)
    weight_decay: float = setting(3e-5, "l2")
    weight_decay_on: str = setting(
        "weights", "weights: kernels only, not BatchNorm or biases | all (torch's SGD, the ports)"
    )
    checkpoint_every: int = setting(1024)
    log_every: int = setting(64)
    keep_checkpoints: int = setting(2)
    steps_per_call: int = setting(1, "steps per dispatch (one compiled lax.scan): > 1 cuts the host's share of a step")
    ensemble_strategy: str = setting(
        "auto",
        "an ensemble's members: vmap (batched) | map (one after another) | devices (split over the devices) | auto",
    )
    tensorboard: bool = setting(
        True, "write TensorBoard event files into WORKDIR/tensorboard (scalars, figures, hparams)"
    )
    freeze_steps: int = setting(20, "with model.init: backbone frozen for the first N steps (CutPaste); else ignored")

    def check(self) -> None:
        choice("train.weight_decay_on", self.weight_decay_on, ("weights", "all"))
        if self.steps < 0:
            raise ValueError(f"config.train.steps={self.steps} must be >= 0")
        for key in ("learning_rate", "checkpoint_every", "log_every", "keep_checkpoints"):
            if not getattr(self, key) > 0:
                raise ValueError(f"config.train.{key}={getattr(self, key)} must be > 0")
        per_call = self.steps_per_call
        if not (isinstance(per_call, int) and per_call >= 1):
            raise ValueError(f"config.train.steps_per_call={per_call!r} must be an integer >= 1")
        for key in ("log_every", "checkpoint_every"):
            if getattr(self, key) % per_call:
                raise ValueError(
                    f"config.train.{key}={getattr(self, key)} is not a multiple of config.train.steps_per_call="
                    f"{per_call}: a run of steps cut short there compiles a program of its own; choose "
                    f"a multiple of {per_call}"
                )
        if self.freeze_steps < 0:
            raise ValueError(f"config.train.freeze_steps={self.freeze_steps} must be >= 0")


@contextlib.contextmanager
def stop_requests():
    """While inside, SIGINT and SIGTERM are recorded in the yielded list instead of stopping the process, so
    the training loop can stop at a step boundary; a second signal acts as it did before."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])

    for s in signums:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: TrainState) -> None:
    """Save ``state`` as checkpoint ``step``; on any write failure (Orbax reports a full disk as a ValueError
    from TensorStore) remove the partial checkpoint and raise :class:`CheckpointWriteError`."""
    try:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as error:
        for unfinished in Path(manager.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(unfinished, ignore_errors=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        if "No space left on device" in reason:
            reason = "No space left on device"
        kept = manager.latest_step()
        raise CheckpointWriteError(
            f"writing the checkpoint of step {step} into {manager.directory} failed ({reason[:300]}). "
            + (f"The checkpoint of step {kept} is intact: " if kept is not None else "")
            + "free space or fix permissions, then run the same command to resume."
        ) from error


MAX_IN_FLIGHT = 2  # dispatched steps not yet finished: enough to keep the device busy, few enough for an honest bar


AVERAGED_METRICS = ("loss", "accuracy", "mean_label", "invalid_fraction")  # logged as means over the window


def fit(
    state: TrainState,
    train_images: jax.Array,
    key: jax.Array,
    *,
    step_fn,
    total_steps: int,
    images_per_step: int,
    manager: ocp.CheckpointManager | None,
    checkpoint_every: int,
    log_every: int,
    log=None,
    schedule=None,
    progress: bool = True,
    started: float | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
    steps_per_call: int = 1,
    chunk_fn=None,
) -> TrainState:
    """Run ``step_fn`` from ``state.step`` to ``total_steps`` with checkpoints, a progress bar and, at every
    log step, a record handed to ``log`` (:func:`sla_jax.outputs.files.run_log` writes it to ``metrics.jsonl`` and
    TensorBoard). A non-finite loss stops the run before it can overwrite a good checkpoint.

    Each log record holds the :data:`AVERAGED_METRICS` averaged over the steps since the previous record
    (other metrics, such as learned label parameters, as of the record's step), the images/s of that
    window and ``seconds`` since ``started`` (a ``time.perf_counter()`` value; default: now). At most
    ``max_in_flight`` dispatches are ahead of the last finished one, so the bar counts finished
    steps and its rate and ETA are the device's (``bench/progress.py`` measures it).

    ``steps_per_call`` > 1 runs that many steps per dispatch through ``chunk_fn(k)``, which returns a function
    ``(state, images, key) -> (state, {"last": metrics, "sum": sums of AVERAGED_METRICS})`` running k steps
    (:func:`sla_jax.training.pretext.compile_train_steps`): chunks end at multiples of ``steps_per_call``, of
    ``log_every`` and of ``checkpoint_every`` and at ``total_steps``, so a resumed run runs the same chunks as
    an uninterrupted one (``bench/host_overhead.py`` measures what it saves)."""
    with stop_requests() as received:
        return _fit_loop(
            state,
            train_images,
            key,
            step_fn=step_fn,
            total_steps=total_steps,
            images_per_step=images_per_step,
            manager=manager,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            log=log,
            schedule=schedule,
            progress=progress,
            stop=received,
            started=time.perf_counter() if started is None else started,
            max_in_flight=max_in_flight,
            steps_per_call=steps_per_call,
            chunk_fn=chunk_fn,
        )


def chunk_end(step: int, *, total_steps: int, every: tuple[int, ...]) -> int:
    """The step a chunk that starts after ``step`` ends at: the next multiple of any of ``every``, or the end."""
    return min([total_steps] + [(step // n + 1) * n for n in every if n > 0])


def _run_chunk(state, train_images, key, *, step, end, step_fn, chunk_fn):
    """``end - step`` steps: one call of ``step_fn`` or of ``chunk_fn(end - step)``; returns (state, last
    metrics, the sums of :data:`AVERAGED_METRICS` over the chunk)."""
    if chunk_fn is None:
        state, metrics = step_fn(state, train_images, key)
        return state, metrics, {k: v for k, v in metrics.items() if k in AVERAGED_METRICS}
    state, out = chunk_fn(end - step)(state, train_images, key)
    return state, out["last"], out["sum"]


def _fit_loop(
    state,
    train_images,
    key,
    *,
    step_fn,
    total_steps,
    images_per_step,
    manager,
    checkpoint_every,
    log_every,
    log,
    schedule,
    progress,
    stop,
    started,
    max_in_flight,
    steps_per_call,
    chunk_fn,
) -> TrainState:
    start = int(state.step)
    bar = tqdm(
        total=total_steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    window_start, window_steps, window_sums = time.perf_counter(), 0, []
    in_flight: collections.deque = collections.deque()
    every = (steps_per_call, log_every, checkpoint_every) if steps_per_call > 1 else (1,)
    step = start
    while step < total_steps:
        end = chunk_end(step, total_steps=total_steps, every=every)
        state, metrics, sums = _run_chunk(
            state,
            train_images,
            key,
            step=step,
            end=end,
            step_fn=step_fn,
            chunk_fn=chunk_fn if steps_per_call > 1 else None,
        )
        in_flight.append((metrics["loss"], end - step))
        window_sums.append(sums)  # added up on the host at the log step: no device call per step for them
        window_steps += end - step
        while len(in_flight) > max_in_flight:
            loss, count = in_flight.popleft()
            jax.block_until_ready(loss)
            bar.update(count)
        done = step = end
        stopping = bool(stop)  # read once: a signal arriving later in this step is handled after the next one
        logging_now = done % log_every == 0 or done == total_steps
        saving_now = manager is not None and (done % checkpoint_every == 0 or done == total_steps or stopping)
        if logging_now or saving_now:
            means = {k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()}  # ensemble: lists
            window = jax.device_get(window_sums)
            means.update(
                {
                    k: (np.sum([np.asarray(w[k], np.float64) for w in window], axis=0) / window_steps).tolist()
                    for k in window[0]
                }
            )
            bar.update(sum(count for _, count in in_flight))  # device_get waited for every dispatched step
            in_flight.clear()
            if not np.all(np.isfinite(means["loss"])):
                kept = manager.latest_step() if manager is not None else None
                raise FloatingPointError(
                    f"loss is {means['loss']} at step {done}; stopped. "
                    + (
                        f"The last good checkpoint (step {kept}) is kept in {manager.directory}; lower "
                        "--config.train.learning_rate and run the same command to resume from it."
                        if kept is not None
                        else "No checkpoint was written yet."
                    )
                )
        if logging_now:
            now = time.perf_counter()
            rate = window_steps * images_per_step / max(now - window_start, 1e-9)
            record = {
                "step": done,
                **means,
                "images_per_s": rate,
                "learning_rate": float(schedule(done - 1)) if schedule else None,
                "seconds": now - started,
            }
            if log is not None:
                log(record)
            bar.set_postfix(
                loss=f"{np.mean(means['loss']):.3f}",
                acc=f"{np.mean(means['accuracy']):.2f}",
                y=f"{np.mean(means['mean_label']):.2f}",
                img_s=f"{rate:.0f}",
            )
            window_steps, window_sums = 0, []
        if saving_now:
            save_checkpoint(manager, done, state)
        if logging_now:
            window_start = time.perf_counter()  # the rate is the training's: checkpoint writes are left out
        if stopping:
            bar.close()
            raise Interrupted(stop[0], done, manager.directory if manager is not None else None)
    bar.update(sum(count for _, count in in_flight))
    bar.close()
    return state
