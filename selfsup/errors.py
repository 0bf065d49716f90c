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


def exit_on_user_error(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
