"""Which checkpoint `trainer.fit` continues from: `resume_point` is the one place that decides.

resume=auto (the default) makes the same command, run again, continue its unfinished run
(docs/reliability.md, "Resuming"); `ckpt_path=` names a checkpoint explicitly; a SLURM job that was requeued
continues from its run directory's newest checkpoint, its own last.ckpt or Lightning's requeue
checkpoint (hpc_ckpt_<n>.ckpt, saved on the requeue signal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_only

from selfsup.checks import resume_enabled
from selfsup.errors import UserError
from selfsup.run.checkpoint import check_checkpoint

RESUMED_NOTE = "RESUMED.txt"


@dataclass(frozen=True)
class ResumePoint:
    run_dir: str  # where the run lives (and goes on writing)
    checkpoint: str
    global_step: int


def resume_point(cfg) -> Optional[ResumePoint]:
    """Where this run continues from, or None for a fresh start; checks that the checkpoint is
    readable and of this method.

    1. resume=auto and the run directory has a checkpoint (the user fixed it with hydra.run.dir=...,
       a DDP rank re-launched into it, a requeued SLURM job): continue from its newest.
    2. resume=auto and an unfinished run directory beside it (outputs/train/runs/*) was made by the
       same command (equal composed config) and has a checkpoint: continue from the newest such, whose
       directory is the point's run_dir (the planner writes the run there: `plan.in_run_dir`); this
       attempt's own directory only keeps a note. A finished run (results.json) is not continued: the
       same command again then starts afresh.
    3. Else `ckpt_path` when given.
    4. Else, under SLURM, the run directory's newest checkpoint: a requeued job goes on (resume=never
       only stops a new command from continuing an old run).
    Reads `cfg` as composed (interpolations unresolved) and changes nothing in it."""
    run_dir = Path(cfg.paths.output_dir)
    source, checkpoint, auto = run_dir, None, resume_enabled(cfg.get("resume", "auto"))
    if auto:
        checkpoint = newest_checkpoint(run_dir)
        if checkpoint is None:
            source, checkpoint = _same_command_run(run_dir, cfg) or (run_dir, None)
        why, fix = "which resume=auto would continue", "use another run directory (hydra.run.dir) or resume=never"
    if checkpoint is None and cfg.ckpt_path:
        saved = check_checkpoint(cfg.ckpt_path, cfg.method.name)
        return ResumePoint(str(run_dir), str(saved.path), saved.global_step)
    if checkpoint is None and SLURMEnvironment.detect():
        checkpoint = newest_checkpoint(run_dir)
        why, fix = "this SLURM job's own, which its requeue continues", "use another run directory (hydra.run.dir)"
    if checkpoint is None:
        return None
    saved = check_checkpoint(checkpoint, cfg.method.name, what=f"{checkpoint} ({why})", fix=fix)
    _check_not_overriding(cfg.ckpt_path, checkpoint, saved, why)
    point = ResumePoint(str(source), str(checkpoint), saved.global_step)
    if rank_zero_only.rank == 0:  # (every rank of a DDP / SLURM job resolves the same run)
        if source != run_dir:
            try:
                (run_dir / RESUMED_NOTE).write_text(
                    f"this command resumed {source} from {checkpoint}; its outputs are there\n"
                )
            except OSError:
                pass
        print(
            f"resuming {source} from {Path(checkpoint).name} (global step {saved.global_step})"
            + ("; resume=never starts afresh" if auto else ""),
            flush=True,
        )
    return point


def _check_not_overriding(ckpt_path, found: Path, saved, why: str) -> None:
    """An explicit ckpt_path= that resume=auto would silently pass over for `found`: refused, unless
    `found` is the run that ckpt_path= started (its saved config has the same ckpt_path), which the
    same command, run again, continues."""
    if not ckpt_path or (saved.cfg or {}).get("ckpt_path") == ckpt_path:
        return
    if Path(str(ckpt_path)).expanduser().resolve() == Path(found).resolve():
        return
    raise UserError(
        f"ckpt_path={ckpt_path} was given, but {found} ({why}) would be used instead: pass resume=never "
        "to start from ckpt_path, or drop ckpt_path to continue the found run"
    )


def newest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest of <run_dir>/checkpoints/last.ckpt and Lightning's SLURM requeue checkpoints."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def _finished(run_dir: Path) -> bool:
    results = run_dir / "results.json"
    if not results.is_file():
        return False
    try:
        return json.loads(results.read_text()).get("status") != "failed"
    except (OSError, ValueError):
        return False


def _command_config(cfg) -> dict:
    """The composed config as Hydra saved it (interpolations unresolved), minus `resume` and the
    `paths` group (where the code, data and runs live, not what the run does)."""
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("resume", None)
    config.pop("paths", None)
    return config


def _command_overrides(overrides) -> list[str]:
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "resume=")))


def _current_overrides() -> Optional[list[str]]:
    from hydra.core.hydra_config import HydraConfig

    return _command_overrides(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _flat(config, prefix: str = "") -> dict:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    return {k: v for key, value in config.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _same_command_run(run_dir: Path, cfg) -> Optional[tuple[Path, Path]]:
    """The newest sibling run directory made by the same command (equal composed config) that has
    a checkpoint and did not finish. A run of the same command line whose composed config has
    changed since (an edited YAML) is not continued, but named, with the keys that differ."""
    parent = run_dir.parent
    if not parent.is_dir():
        return None
    mine, overrides, found, changed = _command_config(cfg), _current_overrides(), [], []
    for other in parent.iterdir():
        if other == run_dir or not other.is_dir() or _finished(other):
            continue
        checkpoint = newest_checkpoint(other)
        saved = other / ".hydra" / "config.yaml"
        if checkpoint is None or not saved.is_file():
            continue
        try:
            theirs = _command_config(OmegaConf.load(saved))
        except Exception:  # noqa: BLE001 - an unreadable or foreign config is simply not a match
            continue
        if theirs == mine:
            found.append((checkpoint.stat().st_mtime, other, checkpoint))
        elif overrides is not None and (other / ".hydra" / "overrides.yaml").is_file():
            try:
                same_line = _command_overrides(OmegaConf.load(other / ".hydra" / "overrides.yaml")) == overrides
            except Exception:  # noqa: BLE001
                same_line = False
            if same_line:
                a, b = _flat(mine), _flat(theirs)
                changed.append(
                    (
                        checkpoint.stat().st_mtime,
                        other,
                        checkpoint,
                        sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)),
                    )
                )
    if found:
        return max(found)[1:]
    if changed:
        _, other, checkpoint, keys = max(changed)
        print(
            f"not resuming {other}: made by this command line, but its config has changed since "
            f"({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}); starting afresh "
            f"(ckpt_path={checkpoint} continues it with the new config)",
            flush=True,
        )
    return None
