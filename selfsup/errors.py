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
                return " ".join([lines[i][len(prefix):], *lines[i + 1:]]).strip()
    return lines[-1].strip()


_TASK_STARTED = False  # set once Hydra has composed the config and called the task function


def _one_line(text: str) -> str:
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
        return f"{where}{_one_line(getattr(err, 'msg', err))}: fix the value or its interpolation (`--cfg job` prints the config)"
    if type(err).__name__ == "MisconfigurationException":  # Lightning rejecting a trainer/callback setting
        return f"{_one_line(err)} (check the trainer.* / callbacks.* settings)"
    return None


def exit_on_user_error(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _TASK_STARTED
        _TASK_STARTED = True
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            message = _one_line(err) if isinstance(err, UserError) else _task_config_error(err)
            if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(getattr(err, "exit_code", 2))

    return wrapper


# --- Hydra's own errors (unknown group option, typo'd key, wrong type, bad override) ---------
def _close(word: str, options) -> str:
    import difflib

    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def config_error_message(err: Exception) -> str:
    """Hydra's multi-line report of a composition error, as one actionable line."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    omega = err if isinstance(err, OmegaConfBaseException) else cause
    if isinstance(err, MissingConfigException) and err.options:
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
        options = sorted(err.options)
        return (f"Could not find '{err.missing_cfg_file}': unknown {group or 'config'} '{name}'"
                f"{_close(name, options)}; available: {', '.join(options)} (pick one with {group}=<name>)")
    first_line = str(getattr(omega, "msg", "") or "").strip().splitlines()[:1]
    first_line = first_line[0] if first_line else ""
    if isinstance(omega, (ConfigKeyError, ConfigAttributeError)) and first_line.startswith("Key '"):
        key = omega.full_key or str(getattr(omega, "key", ""))
        parent = getattr(omega, "parent_node", None)
        valid = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
        prefix = key.rpartition(".")[0]
        suggestion = _close(str(key).rpartition(".")[2], valid)
        if suggestion:
            suggestion = suggestion.replace("mean ", f"mean {prefix + '.' if prefix else ''}")
        where = f"'{prefix}'" if prefix else "the top level of the config"
        return (f"unknown key '{key}'{suggestion}: {where} has no such setting "
                f"(add --cfg job to the command to print every key)")
    if isinstance(omega, ValidationError):
        key = omega.full_key or "a value"
        if "expected one of" in first_line:  # an Enum field of the schema: a typo'd choice
            return f"{key}: {first_line}{_close(omega.value, first_line.partition('[')[2].rstrip(']').split(', '))}: pick one of them"
        return f"{key}: {first_line}: pass a value of the right type, e.g. {key}=<value>"
    if isinstance(err, OverrideParseException):
        reason = str(err).strip().splitlines()[0]
        return f"cannot parse the override '{getattr(err, 'override', '')}' ({reason}): write it as key=value, quoting special characters"
    text = _one_line(err)
    if cause is not None:
        text = f"{text} {_one_line(getattr(cause, 'msg', cause))}"
    return text


def one_line_config_errors() -> None:
    """Make Hydra report a configuration mistake it finds while composing (an unknown group option,
    a typo'd key, a wrong type, a malformed override) as one line `error: ...` with exit status 2,
    like a `UserError`, instead of its multi-line report; the same for two of Hydra's modes at once
    (e.g. `-m ... --cfg job`), which Hydra refuses with a traceback. Errors raised once the task runs
    keep Hydra's handling; HYDRA_FULL_ERROR=1 keeps the full traceback for both."""
    _refuse_two_modes(sys.argv[1:])
    try:
        import hydra._internal.utils as hydra_utils
    except ImportError:  # pragma: no cover - a Hydra without this seam: keep its own report
        return
    original = hydra_utils.run_and_report
    if getattr(original, "_selfsup_one_line", False):
        return

    def run_and_report(func):
        try:
            return func()
        except Exception as err:
            if _TASK_STARTED or os.environ.get("HYDRA_FULL_ERROR") == "1":
                def reraise(error=err):  # bound now: Python unbinds `err` when the except block ends
                    raise error
                return original(reraise)
            try:
                message = config_error_message(err)
            except Exception:  # noqa: BLE001 - never hide the error behind a formatting bug
                message = _one_line(err)
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    run_and_report._selfsup_one_line = True
    hydra_utils.run_and_report = run_and_report


def _refuse_two_modes(args: list[str]) -> None:
    """Hydra runs one of --multirun, --cfg, --info, --run, --shell-completion; two of them: one line."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    from hydra._internal.utils import get_args_parser

    parsed, _ = get_args_parser().parse_known_args(args)
    modes = [flag for flag, given in (("--multirun", parsed.multirun), ("--cfg", parsed.cfg), ("--info", parsed.info),
                                      ("--run", parsed.run), ("--shell-completion", parsed.shell_completion)) if given]
    if len(modes) > 1:
        hint = (" --cfg prints one job's config: drop -m/--multirun to see the first combination's "
                "(e.g. `python train.py method=simclr --cfg job`), or drop --cfg to run the sweep"
                if "--cfg" in modes and "--multirun" in modes else "")
        print(f"error: {' and '.join(modes)} cannot be combined (Hydra runs one mode at a time);{hint}",
              file=sys.stderr, flush=True)
        sys.exit(2)
