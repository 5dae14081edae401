"""A run's identity: which settings make a workdir's checkpoints the model they are, so that a later command in
the same workdir resumes that model or refuses, and never pairs it with another config.

Works on plain dicts (``ConfigDict.to_dict()`` or a workdir's ``config.json``), no JAX. The rules
(``docs/reliability.md``, "Runs"):

- settings that only say how long to train, how often to log and checkpoint, where the prepared records are
  cached, or how to evaluate (``eval.*``, the localization keys besides ``patch_size``) may change: a
  resumed run evaluates with the new ones and rewrites its results;
- ``train.steps`` may grow (training continues from the newest checkpoint); below the newest checkpoint it
  is refused, since that checkpoint cannot be un-trained;
- any other difference is refused with every differing key, old → new.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from sla_jax.common.errors import ConfigError, WorkdirError

FREE_KEYS = frozenset(
    {
        "train.steps",
        "train.checkpoint_every",
        "train.log_every",
        "train.keep_checkpoints",
        "train.tensorboard",
        "train.steps_per_call",
        "train.ensemble_strategy",
        "data.cache_dir",
        "data.skip_bad_files",
        "localization.stride",
        "localization.train_stride",
        "localization.sigma",
        "localization.normalize",
        "localization.gde",
        "localization.batch_size",
        "localization.heatmaps",
    }
)
FREE_SECTIONS = ("eval.",)
OPTIONAL_SECTIONS = ("ensemble.",)  # a config has it or not: present on one side only is a difference
ABSENT = "(absent)"
PATH_KEYS = ("data.root", "data.cache_dir", "model.init")  # stored absolute at training time
CONFIG = "config.json"
LINEAGE = "lineage.json"  # the train.steps of each segment of a run whose train.steps changed


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """``{"train": {"steps": 3}}`` → ``{"train.steps": 3}``; lists and tuples as tuples."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, (list, tuple)) else value
    return flat


def is_free(key: str) -> bool:
    return key in FREE_KEYS or key.startswith(FREE_SECTIONS)


def differences(saved: Mapping, new: Mapping) -> list[tuple[str, object, object]]:
    """(key, old, new) for every identity key whose value differs; keys one side lacks (a setting added by a
    later version) are left out."""
    old_flat, new_flat = flatten(saved), flatten(new)
    changed = [
        (k, old_flat[k], new_flat[k])
        for k in sorted(old_flat.keys() & new_flat.keys())
        if not is_free(k) and not _same(old_flat[k], new_flat[k])
    ]
    optional = sorted(k for k in old_flat.keys() ^ new_flat.keys() if k.startswith(OPTIONAL_SECTIONS))
    return changed + [(k, old_flat.get(k, ABSENT), new_flat.get(k, ABSENT)) for k in optional]


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of the finished checkpoints in ``WORKDIR/checkpoints`` (Orbax names each folder by its step;
    unfinished ones carry a suffix), read without creating anything."""
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(
        int(name) for name in os.listdir(folder) if name.isdigit() and os.path.isdir(os.path.join(folder, name))
    )


def read_saved_config(workdir: str | os.PathLike) -> dict | None:
    """The config a run in ``workdir`` was started with, as a dict; None when there is no ``config.json``.
    A file that is not a JSON object is a :class:`WorkdirError` naming it and the line."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except json.JSONDecodeError as error:
        raise WorkdirError(
            f"{path} cannot be read: {error.msg} at line {error.lineno}, column {error.colno} (cut "
            "short or edited by hand?). Restore it from the run's command, or use another "
            "--workdir."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorkdirError(f"{path} cannot be read ({error}). Restore it, or use another --workdir.") from None
    if not isinstance(saved, dict):
        raise WorkdirError(
            f"{path} holds a JSON {type(saved).__name__}, not a config. Restore it from the run's "
            "command, or use another --workdir."
        )
    return saved


def relative_paths(saved: Mapping) -> list[tuple[str, str]]:
    """(key, value) of each path setting stored relative (by an sla_jax older than this rule)."""
    flat = flatten(saved)
    return [(k, flat[k]) for k in PATH_KEYS if isinstance(flat.get(k), str) and flat[k] and not os.path.isabs(flat[k])]


def check_resume(saved: Mapping, new: Mapping, *, workdir: str, newest: int | None) -> str | None:
    """Whether a run with config ``new`` may go on in ``workdir``, whose run has config ``saved`` and newest
    checkpoint ``newest``. Raises :class:`ConfigError` naming every differing identity key, or a
    ``train.steps`` below ``newest``; returns a line to print when training continues past the old
    ``train.steps`` (or stops short of it), else None."""
    changed = differences(saved, new)
    if changed:
        listed = "; ".join(f"{k}: {_show(a)} → {_show(b)}" for k, a, b in changed)
        raise ConfigError(
            f"the workdir {workdir} holds a run with other settings ({listed}). Its checkpoints are "
            "of that run: use another --workdir for this one (nothing was written)."
        )
    old_steps, new_steps = int(flatten(saved).get("train.steps", 0)), int(flatten(new)["train.steps"])
    if newest is not None and new_steps < newest:
        raise ConfigError(
            f"--config.train.steps={new_steps} is below the newest checkpoint of {workdir} (step "
            f"{newest}), which cannot be un-trained. To evaluate an earlier kept checkpoint run "
            f"`python -m sla_jax.evaluate --workdir={workdir} --step=N`; to train {new_steps} steps, "
            "use another --workdir (nothing was written)."
        )
    if newest is not None and new_steps != old_steps:
        return (
            f"train.steps {old_steps} → {new_steps}: training continues from the checkpoint of step {newest} "
            f"with the learning-rate schedule of a {new_steps}-step run (the result is not that of a fresh "
            f"{new_steps}-step run; {LINEAGE} records each part)"
        )
    return None


def _show(value) -> str:
    return repr(value) if isinstance(value, str) and value != ABSENT else str(value)


def extend_lineage(workdir: str, *, old_steps: int, new_steps: int, newest: int) -> list[dict]:
    """The run's training segments with one more: ``from_step`` and the ``train_steps`` its schedule used."""
    segments = read_lineage(workdir) or [{"from_step": 0, "train_steps": old_steps}]
    return [*segments, {"from_step": newest, "train_steps": new_steps}]


def read_lineage(workdir: str) -> list[dict]:
    path = os.path.join(workdir, LINEAGE)
    if not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return list(json.load(f)["segments"])
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise WorkdirError(f"{path} cannot be read ({error}). Restore it, or use another --workdir.") from None
