"""User-facing errors: one actionable line instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys


class UserError(Exception):
    """A mistake in the configuration, the data or the environment that the user can fix.

    The message names what is wrong and how to fix it; entry points print it on one line and
    exit non-zero. Set HYDRA_FULL_ERROR=1 to get the traceback as well.
    """

    exit_code = 2

    def __init__(self, message: str = ""):
        # Raised in a DataLoader worker, torch re-raises it in the main process as
        # `UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback ...")`:
        # keep the original one-line message (the worker's traceback stays in `worker_traceback`).
        self.worker_traceback = None
        if isinstance(message, str) and "\nOriginal Traceback" in message:
            self.worker_traceback = message
            message = _original_message(message, type(self))
        super().__init__(message)


class NonFiniteError(UserError):
    """A NaN/inf loss or weights: the run stops with one line; exit status 3 (not a config mistake)."""

    exit_code = 3


def _original_message(wrapped: str, cls: type) -> str:
    lines = wrapped.rstrip().splitlines()
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for i in range(len(lines) - 1, -1, -1):
        for prefix in prefixes:
            if lines[i].startswith(prefix):
                return " ".join([lines[i][len(prefix) :], *lines[i + 1 :]]).strip()
    return lines[-1].strip()


_TASK_STARTED = False  # set once Hydra has composed the config and called the task function


def task_started() -> bool:
    """Whether the entry point's task function runs (its errors are no longer Hydra's composing)."""
    return _TASK_STARTED


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _task_config_error(err: Exception) -> str | None:
    """A one-line message for errors of the composed config that only surface when the task reads
    it (a mandatory `???` value left unset, an interpolation that does not resolve) or when
    Lightning validates its arguments; None for anything else (a bug: keep the traceback)."""
    try:
        from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
    except ImportError:  # pragma: no cover
        return None
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or "a config value"
        return f"{key} is not set (???): pass {key}=<value> on the command line"
    if isinstance(err, InterpolationResolutionError):
        key = getattr(err, "full_key", None)
        where = f"{key}: " if key else ""
        return f"{where}{one_line(getattr(err, 'msg', err))}: fix the value or its interpolation (`--cfg job` prints the config)"
    if type(err).__name__ == "MisconfigurationException":  # Lightning rejecting a trainer/callback setting
        return f"{one_line(err)} (check the trainer.* / callbacks.* settings)"
    return None


def exit_on_user_error(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _TASK_STARTED
        _TASK_STARTED = True
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            message = one_line(err) if isinstance(err, UserError) else _task_config_error(err)
            if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(getattr(err, "exit_code", 2))

    return wrapper
