"""The error contract every command line keeps: a mistake ends in at most three lines on stderr, the first
starting with ``error:``, no traceback, and nothing created on disk; exit status 2 for usage and config
mistakes, 1 for data and run failures (and 128 + N after signal N, with a checkpoint to resume from).

A command line is ``flags + one call into the library``: :func:`run` parses its flags (a misspelt flag
or ``--config.`` override is a usage error naming the nearest valid one) and maps the library's errors
(``sla_jax.common.errors``). This module does not import JAX.
"""

from __future__ import annotations

import _thread
import ast
import difflib
import logging as std_logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

from sla_jax.common import runtime
from sla_jax.common.errors import (
    CheckpointWriteError,
    ConfigError,
    DataError,
    Interrupted,
    UsageError,
    WeightsError,
    WorkdirError,
)

MAX_LINES = 3
USAGE = 2  # a flag, a config key or value, a missing argument: the command itself must change
FAILURE = 1  # the data, the workdir or the run: the command was right, something it met was not


RUN_FAILURES = (
    DataError,
    WorkdirError,
    CheckpointWriteError,
    FloatingPointError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    IsADirectoryError,
    WeightsError,
)


def fail(message: str, *, code: int) -> NoReturn:
    """Print ``error: message`` (cut to :data:`MAX_LINES` lines) to stderr and exit with ``code``."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()] or ["(no message)"]
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [lines[-1]]
    lines[0] = "error: " + lines[0]
    print("\n".join(lines), file=sys.stderr)
    sys.exit(code)


def _config_override_error(error: Exception, argv: Sequence[str]) -> str | None:
    """The message for a ``--config.KEY=VALUE`` that names no key of the config or has the wrong type: the
    key as typed and, for a misspelt one, the key it was probably meant to be."""
    overrides = [a.split("=", 1)[0][len("--config.") :] for a in argv if a.startswith("--config.")]
    if not overrides:
        return None
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    if hint:
        meant, typed = hint.groups()
        key = next((k for k in overrides if typed in k.split(".")), overrides[-1])
        fixed = ".".join(meant if part == typed else part for part in key.split("."))
        return f'--config.{key} is not a key of the config. Did you mean "--config.{fixed}"?'
    key = next((k for k in overrides if k in text or k.split(".")[-1] in text), overrides[-1])
    reason = re.sub(r"\s+", " ", text).strip()
    reason = reason.split(": ", 1)[1] if reason.startswith("flag --config.") and ": " in reason else reason
    return f"--config.{key}: {reason[:300]}"


def _config_file_failure(error: BaseException, argv: Sequence[str]) -> str | None:
    """The message for a config file that raised while it was imported or while its ``get_config()`` ran:
    the file, the line and the error (None when the error did not come from a config file)."""
    given = {
        os.path.abspath(a.split("=", 1)[1])
        for a in argv
        if re.match(r"--\w+=", a) and a.split("=", 1)[1].endswith(".py")
    }
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) in given]
    if not frames:
        return None
    where = frames[-1]
    return (
        f"the config file {where.filename} failed at line {where.lineno} ({type(error).__name__}: "
        f"{str(error).strip()[:200]}); fix the file"
    )


def parse_flags(argv: Sequence[str], *, config_flag: str | None = None) -> list[str]:
    """absl's flag parsing, with a bad flag or config override as one ``error:`` line and exit 2; a config
    file that fails to run, or whose ``get_config()`` returns nothing, likewise (naming the file and line)."""
    try:
        rest = flags.FLAGS(list(argv))
    except Exception as error:  # noqa: BLE001 - a config file may raise anything while it runs
        failure = _config_file_failure(error, argv)
        if failure:
            fail(failure, code=USAGE)
        _flag_error(error, argv)
    if (
        config_flag
        and config_flag in flags.FLAGS
        and flags.FLAGS[config_flag].present
        and flags.FLAGS[config_flag].value is None
    ):
        fail(
            f"--{config_flag}={flags.FLAGS[config_flag].config_filename}: get_config() returned None; it must "
            "return the config (an ml_collections.ConfigDict, see configs/)",
            code=USAGE,
        )
    return rest


def _flag_error(error: Exception, argv: Sequence[str]) -> NoReturn:
    """One ``error:`` line (exit 2) for a flag or ``--config.`` override that absl or ml_collections refused."""
    overrides = any(a.startswith("--config.") for a in argv)
    if isinstance(error, flags.Error):
        message = str(error)
        unknown = re.search(r"Unknown command line flag '([^']+)'", message)
        if unknown:
            names = [
                name
                for name in flags.FLAGS
                if not name.startswith(("help", "only_check", "pdb", "run_with", "use_cprofile", "profile_file"))
            ]
            close = difflib.get_close_matches(unknown.group(1), names, n=1)
            message = f"unknown flag --{unknown.group(1)}." + (f" Did you mean --{close[0]}?" if close else "")
        elif "config" in flags.FLAGS and overrides:
            message = _config_override_error(error, argv) or message
        fail(message, code=USAGE)
    message = _config_override_error(error, argv) if overrides else None  # ml_collections' override errors
    fail(message or f"{type(error).__name__}: {error}", code=USAGE)


def config_file(flag: str, argv: Sequence[str]) -> None:
    """A ``--FLAG=FILE`` config file that does not exist, is not Python or defines no ``get_config()`` is a
    usage error naming it (checked before absl loads the file, whose own message is the loader's traceback)."""
    for arg in argv:
        if arg.startswith(f"--{flag}="):
            path = arg.split("=", 1)[1]
            if not os.path.isfile(path):
                fail(f"--{flag}={path}: no such config file (configs/ holds the shipped ones)", code=USAGE)
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as error:
                fail(f"--{flag}={path} is not a Python config file ({type(error).__name__}: {error})", code=USAGE)
            if not any(isinstance(node, ast.FunctionDef) and node.name == "get_config" for node in tree.body):
                fail(f"--{flag}={path} defines no get_config(): it is not a config file (see configs/)", code=USAGE)


def run(main: Callable[[list[str]], object], *, compilation_cache: bool = True, config_flag: str | None = None) -> None:
    """``absl.app.run(main)`` under the contract: usage and library errors become ``error:`` lines."""

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file operation at INFO
        if threading.current_thread() is threading.main_thread():  # outside training (which checkpoints first)
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _stop)
            sys.unraisablehook = _unraisable
        if compilation_cache:
            runtime.enable_compilation_cache()  # imports JAX
        try:
            code = main(argv)
        except Interrupted as stop:
            print(f"\n{stop}. Run the same command to resume.", file=sys.stderr)
            sys.exit(128 + stop.signum)
        except KeyboardInterrupt:
            signum = _STOP["signum"] or signal.SIGINT
            print(f"\n{_stopped_message(signum)}", file=sys.stderr)
            sys.exit(128 + signum)
        except (UsageError, ConfigError, app.UsageError) as error:
            fail(str(error), code=USAGE)
        except RUN_FAILURES as error:
            fail(str(error), code=FAILURE)
        except OSError as error:
            fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "), code=FAILURE)
        if threading.current_thread() is threading.main_thread():  # done: a late Ctrl-C changes nothing
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(code or 0)

    def parser(argv):
        if any(a in ("--help", "-h", "--helpshort", "-?", "--helpfull") for a in argv[1:]):
            print_help(argv, config_flag=config_flag)
            sys.exit(0)
        if config_flag:
            config_file(config_flag, argv)
        quiet = std_logging.getLogger("absl")  # its warning about a None get_config() is said as an error below
        level = quiet.level
        quiet.setLevel(std_logging.ERROR)
        try:
            return parse_flags(argv, config_flag=config_flag)
        finally:
            quiet.setLevel(level)

    app.run(wrapped, flags_parser=parser)


_STOP: dict = {"signum": None}
STOP_GRACE_SECONDS = 30.0  # then the process ends even if the interrupt never reached the main code


def _stopped_message(signum: int) -> str:
    return (
        f"stopped by {signal.Signals(signum).name}. Every file written so far is whole (a result is written "
        "at once or not at all); run the same command to resume."
    )


def _stop(signum, frame) -> NoReturn:
    """SIGINT or SIGTERM outside the training loop: raise KeyboardInterrupt, so that the command unwinds (the
    lock is released, temporary files removed) and exits 128 + signum. Python drops an exception raised
    while it runs a garbage-collection or finalizer callback; :func:`_unraisable` then delivers it again, and
    a timer ends the process after :data:`STOP_GRACE_SECONDS` should it still not arrive."""
    if _STOP["signum"] is None:

        def end():
            print(f"\n{_stopped_message(signum)}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

        timer = threading.Timer(STOP_GRACE_SECONDS, end)
        timer.daemon = True
        timer.start()
    _STOP["signum"] = signum
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """A stop request that landed in a callback (where Python ignores exceptions) is sent to the main code
    again; other unraisable exceptions are reported as Python would."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and _STOP["signum"] is not None:
        # From another thread, a moment later: the main thread runs the handler once it has left this hook (run
        # here, the handler would raise inside the hook and be dropped again).
        redeliver = threading.Timer(0.05, _thread.interrupt_main, args=(_STOP["signum"],))
        redeliver.daemon = True
        redeliver.start()
        return
    sys.__unraisablehook__(unraisable)


def print_help(argv: Sequence[str], *, config_flag: str | None) -> None:
    """``--help``: the command's docstring and flags and, for commands that take a config, every config key
    with its value (the defaults, or those of ``--config=FILE``) and the comment beside it in
    ``sla_jax/defaults.py``."""
    main = sys.modules.get("__main__")
    print((main.__doc__ or "").strip() + "\n")
    print("flags:\n" + flags.FLAGS.main_module_help().split("\n", 1)[-1].rstrip())
    if not config_flag:
        return
    from sla_jax import defaults
    from sla_jax.experiment import identity

    config, source = defaults.base_config(), "defaults"
    given = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{config_flag}=")]
    if given and os.path.isfile(given[0]):
        try:
            config, source = flags.FLAGS[config_flag]._parse(given[0]), given[0]  # noqa: SLF001
        except Exception as error:  # noqa: BLE001 - the file's own failure is shown, the defaults listed
            print(f"\n({given[0]} cannot be loaded: {type(error).__name__}: {error}; showing the defaults)")
    print(f"\nconfig keys (--{config_flag}.KEY=VALUE), values of {source}:")
    meanings, base = defaults.key_comments(), identity.flatten(defaults.base_config().to_dict())
    for key, value in identity.flatten(config.to_dict()).items():
        default = f" (default {base[key]!r})" if key in base and base[key] != value else ""
        print(f"  {key} = {value!r}{default}" + (f"  # {meanings[key]}" if key in meanings else ""))


def require(value, message: str):
    """``value``, or a :class:`UsageError` with ``message`` when it is missing (None or empty)."""
    if value is None or value == "" or value == []:
        raise UsageError(message)
    return value


def run_workdir(value) -> str:
    """The ``--workdir`` of a command that reads a finished run: given, and a folder."""
    return existing_dir(
        require(value, "--workdir is required: a run folder written by sla_jax.train"), what="--workdir"
    )


def existing_dir(path: str, *, what: str) -> str:
    """``path`` when it is a folder; a run failure naming it otherwise."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path} is not a folder")
    return path
