"""resume=auto: which run it picks, when it refuses, and what a resumed run keeps (RNG states, the W&B run id)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from selfsup.errors import UserError
from selfsup.run.plan import in_run_dir
from selfsup.run.resume import resume_point
from selfsup.run.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def hydra_overrides():
    """Stands in for the Hydra run of `train.py <overrides>` that resume=auto reads its command line from."""

    def set_overrides(overrides: list[str]):
        HydraConfig.instance().set_config(compose_train(overrides, hydra_config=True))

    yield set_overrides
    HydraConfig.instance().cfg = None


def _saved_run(run_dir, cfg, overrides: list[str]):
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    (run_dir / "checkpoints").mkdir()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": {"cfg": {"method": {"name": "simclr"}}}, "global_step": 4, "epoch": 0}, checkpoint)
    return checkpoint


def _as_saved(overrides: list[str]):
    cfg = compose_train(overrides, "unused")
    cfg.paths.output_dir = "${hydra:runtime.output_dir}"  # as Hydra saves it in .hydra/config.yaml
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))


def test_resume_auto_names_but_does_not_continue_a_run_whose_config_changed(tmp_path, hydra_overrides, capsys):
    command = ["optimizer.lr=0.5"]
    runs = tmp_path / "runs"
    edited = _as_saved(command)
    edited.optimizer.weight_decay = 0.123  # the YAML was edited since that run
    checkpoint = _saved_run(runs / "1_before_the_edit", edited, command)
    other = _as_saved(["optimizer.lr=0.7"])
    _saved_run(runs / "2_another_command", other, ["optimizer.lr=0.7"])
    (runs / "3_now").mkdir()

    hydra_overrides([*command, "resume=auto"])  # resume= is not part of what makes a command the same
    cfg = _as_saved(command)
    cfg.paths.output_dir = str(runs / "3_now")
    assert resume_point(cfg) is None and cfg.paths.output_dir == str(runs / "3_now")
    printed = capsys.readouterr().out
    assert (
        f"not resuming {runs / '1_before_the_edit'}: made by this command line, but its config has changed "
        f"since (optimizer.weight_decay); starting afresh (ckpt_path={checkpoint} continues it"
    ) in printed
    assert "2_another_command" not in printed


# --- resume=auto: which run a command continues (in-process, no training) -------------------------
def _fake_run(run_dir: Path, cfg, step: int, method: str = "simclr", finished: bool = False) -> Path:
    from omegaconf import OmegaConf

    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    (run_dir / "checkpoints").mkdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": {"cfg": {"method": {"name": method}}}, "global_step": step, "epoch": 0}, ckpt)
    if finished:
        (run_dir / "results.json").write_text("{}")
    return ckpt


def _composed(overrides: list[str]):
    from omegaconf import OmegaConf

    cfg = compose_train(overrides, "unused")
    cfg.paths.output_dir = "${hydra:runtime.output_dir}"  # as Hydra saves it in .hydra/config.yaml
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))


def test_resume_auto_picks_the_newest_unfinished_run_of_the_same_command(tmp_path):
    from dataclasses import asdict

    from selfsup.run.resume import resume_point

    runs = tmp_path / "runs"
    cfg = _composed(["optimizer.lr=0.5"])
    _fake_run(runs / "1_old", cfg, step=4)
    time.sleep(0.05)
    newest = _fake_run(runs / "2_new", cfg, step=8)
    _fake_run(runs / "3_other_command", _composed(["optimizer.lr=0.7"]), step=12)
    _fake_run(runs / "4_finished", cfg, step=20, finished=True)
    (runs / "5_this_attempt").mkdir()

    cfg.paths.output_dir = str(runs / "5_this_attempt")
    point = resume_point(cfg)
    resumed = asdict(point)
    assert resumed == {"run_dir": str(runs / "2_new"), "checkpoint": str(newest), "global_step": 8}
    assert in_run_dir(cfg, point).paths.output_dir == str(runs / "2_new")  # the run continues in its own directory
    assert "2_new" in (runs / "5_this_attempt" / "RESUMED.txt").read_text()

    cfg.paths.output_dir, cfg.resume = str(runs / "5_this_attempt"), "never"
    assert resume_point(cfg) is None


def test_resume_auto_prefers_its_own_run_dir_and_checks_the_method(tmp_path):
    from selfsup.run.resume import resume_point

    cfg = _composed([])
    own = _fake_run(tmp_path / "pinned", cfg, step=3)
    cfg.paths.output_dir = str(tmp_path / "pinned")  # hydra.run.dir=... given by the user
    assert resume_point(cfg).checkpoint == str(own)

    cfg = _composed([])
    _fake_run(tmp_path / "byol_dir", cfg, step=3, method="byol")
    cfg.paths.output_dir = str(tmp_path / "byol_dir")
    with pytest.raises(UserError, match="byol"):
        resume_point(cfg)


def test_rng_states_survive_a_weights_only_checkpoint_round_trip():
    import io
    import random

    state = RunState()
    saved = state.state_dict()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    buffer = io.BytesIO()
    torch.save({"callbacks": {"RunState": saved}}, buffer)
    buffer.seek(0)
    state.load_state_dict(torch.load(buffer, weights_only=True)["callbacks"]["RunState"])  # as Lightning loads
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_wandb_run_id_is_kept_in_the_run_dir_so_a_resumed_run_reuses_it(tmp_path):
    from hydra.utils import instantiate

    from selfsup.tracking import logger_kwargs

    cfg = compose_train(["logger=wandb"], tmp_path)
    first = logger_kwargs(cfg.logger.wandb, str(tmp_path))
    assert first == logger_kwargs(cfg.logger.wandb, str(tmp_path)) and first["id"]
    assert (tmp_path / "wandb_run_id").read_text().strip() == first["id"]
    assert logger_kwargs(cfg.logger.csv, str(tmp_path)) == {}
    logger = instantiate(cfg.logger.wandb, offline=True, **first)
    assert logger._wandb_init["id"] == first["id"] and logger._wandb_init["resume"] == "allow"
