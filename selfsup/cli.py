"""Where train.py and eval.py meet Hydra: the two patches of Hydra's internals live here, nowhere else.

`fast_help`: `--help` shows the template (conf/hydra/*.yaml `help`) with real examples and the groups
a user picks from, listed from conf/ in milliseconds. Hydra lists the groups by composing every
option of every group, its own included, whatever the template shows (~3 s here, most of it copying
the schemas once per option), and lists the internal `schema/*` groups (selfsup/config) as if they
were choices.

`one_line_config_errors`: a mistake Hydra finds while composing (unknown option, typo'd key, wrong
type, bad override) ends in one `error: ...` line, like a `UserError` (selfsup/errors.py)."""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

from selfsup.errors import one_line, task_started

CONF = Path(__file__).resolve().parents[1] / "conf"


def app_config_groups(groups) -> str:
    """`group: option, ...` for each of `groups` that is a folder of conf/, one line each."""
    lines = []
    for group in sorted(groups):
        options = sorted(f.stem for f in (CONF / group).glob("*.yaml"))
        if options and group != "hydra" and not group.startswith("hydra/"):
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def fast_help() -> None:
    """Make `--help` fill $APP_CONFIG_GROUPS with the groups this entry point composes (not the schema/*
    ones nor the building blocks under them, which are no choice), options from conf/; a template that
    shows Hydra's own groups (`--hydra-help`) keeps Hydra's listing."""
    from hydra._internal.hydra import Hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    original = Hydra.get_help
    if getattr(original, "_selfsup_fast", False):
        return

    def get_help(self, help_cfg, cfg, args_parser, resolve: bool) -> str:
        if "HYDRA_CONFIG_GROUPS" in help_cfg.template:
            return original(self, help_cfg, cfg, args_parser, resolve)
        return string.Template(help_cfg.template).safe_substitute(
            FLAGS_HELP=self.format_args_help(args_parser),
            APP_CONFIG_GROUPS=app_config_groups(HydraConfig.get().runtime.choices.keys()),
            CONFIG=OmegaConf.to_yaml(cfg, resolve=resolve),
        )

    get_help._selfsup_fast = True
    Hydra.get_help = get_help


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
        return (
            f"Could not find '{err.missing_cfg_file}': unknown {group or 'config'} '{name}'"
            f"{_close(name, options)}; available: {', '.join(options)} (pick one with {group}=<name>)"
        )
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
        return (
            f"unknown key '{key}'{suggestion}: {where} has no such setting "
            f"(add --cfg job to the command to print every key)"
        )
    if isinstance(omega, ValidationError):
        key = omega.full_key or "a value"
        if "expected one of" in first_line:  # an Enum field of the schema: a typo'd choice
            return f"{key}: {first_line}{_close(omega.value, first_line.partition('[')[2].rstrip(']').split(', '))}: pick one of them"
        return f"{key}: {first_line}: pass a value of the right type, e.g. {key}=<value>"
    if isinstance(err, OverrideParseException):
        reason = str(err).strip().splitlines()[0]
        return f"cannot parse the override '{getattr(err, 'override', '')}' ({reason}): write it as key=value, quoting special characters"
    text = one_line(err)
    if cause is not None:
        text = f"{text} {one_line(getattr(cause, 'msg', cause))}"
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
            if task_started() or os.environ.get("HYDRA_FULL_ERROR") == "1":

                def reraise(error=err):  # bound now: Python unbinds `err` when the except block ends
                    raise error

                return original(reraise)
            try:
                message = config_error_message(err)
            except Exception:  # noqa: BLE001 - never hide the error behind a formatting bug
                message = one_line(err)
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
    modes = [
        flag
        for flag, given in (
            ("--multirun", parsed.multirun),
            ("--cfg", parsed.cfg),
            ("--info", parsed.info),
            ("--run", parsed.run),
            ("--shell-completion", parsed.shell_completion),
        )
        if given
    ]
    if len(modes) > 1:
        hint = (
            " --cfg prints one job's config: drop -m/--multirun to see the first combination's "
            "(e.g. `python train.py method=simclr --cfg job`), or drop --cfg to run the sweep"
            if "--cfg" in modes and "--multirun" in modes
            else ""
        )
        print(
            f"error: {' and '.join(modes)} cannot be combined (Hydra runs one mode at a time);{hint}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)
