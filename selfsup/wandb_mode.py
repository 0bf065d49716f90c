"""Whether Weights & Biases logs online, offline or not at all: decided in one place, before torch
loads (train.py checks it with the rest of the config), and never by a login prompt.

`wandb_mode()`:
  * `logger.wandb.offline: true|false` in the config wins;
  * else WANDB_MODE (offline, dryrun, online, disabled) if set;
  * else online only when an API key is configured (WANDB_API_KEY, or `wandb login`'s netrc
    entry), offline otherwise.
Online without a key is refused with a one-line error (wandb would prompt for one); an online
start that fails (no network) falls back to offline with a warning instead of aborting the run
(selfsup/tracking.py); `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run later.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from selfsup.errors import UserError


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(offline: Optional[bool] = None) -> str:
    """'online', 'offline' or 'disabled' (see the module docstring)."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if offline is None:
        if env in ("offline", "dryrun"):
            return "offline"
        if env == "disabled":
            return "disabled"
        asked = f"WANDB_MODE={env}" if env in ("online", "run") else None
    else:
        asked = None if offline else "logger.wandb.offline=false"
    if asked is None:
        return "online" if offline is None and api_key_configured() else "offline"
    if not api_key_configured():  # wandb would prompt for a key: refuse instead
        raise UserError(
            f"W&B online logging was requested ({asked}) but no W&B API key is configured: run "
            "`wandb login` or set WANDB_API_KEY, or log offline (WANDB_MODE=offline, upload later "
            "with `wandb sync`)"
        )
    return "online"


def check_wandb(cfg) -> None:
    """A W&B logger in the config that asks to log online has an API key (train.py, before torch loads)."""
    for logger in (cfg.get("logger") or {}).values():
        if "wandb" in str(logger.get("_target_", "")).lower():
            wandb_mode(logger.get("offline"))  # online asked without an API key: UserError


def finish_wandb(exit_code: int = 0) -> None:
    """End the current W&B run, if any: each job of a multirun gets its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
