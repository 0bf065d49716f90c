"""W&B stays offline unless opted in."""

from __future__ import annotations

import pytest

from selfsup.errors import UserError


def test_wandb_mode_is_offline_unless_opted_in(monkeypatch, tmp_path):
    from selfsup.wandb_mode import wandb_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert wandb_mode(None) == "offline"
    with pytest.raises(UserError, match="no W&B API key"):
        wandb_mode(False)  # online asked, no key: one-line error, never wandb's login prompt
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(None) == "online" and wandb_mode(True) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(None) == "online"
