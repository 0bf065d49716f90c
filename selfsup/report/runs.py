"""The runs below a directory, read back from what each left: results.json, the Hydra overrides,
the kNN curve of its CSV log; a job without results.json is listed as failed. Also how runs group
(over seeds) and what a sweep varied between them, which both renderings show."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ACCURACIES = (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1"), ("finetune_top1", "fine-tune top-1"))


@dataclass
class Run:
    dir: Path
    label: str
    results: dict
    overrides: list[str] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (epochs done, val/knn_top1)

    @property
    def failed(self) -> bool:
        return self.results.get("status") == "failed"


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """The completed runs, those that differ only in their seed grouped together (same method, data,
    backbone and overrides but seed=, distinct seeds), in run order; any other run alone."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.failed:
            continue
        res = r.results
        key = (
            res.get("method"),
            data_label(res),
            res.get("backbone"),
            tuple(sorted(o for o in r.overrides if not is_seed(o))),
        )
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        seeds = [r.results.get("seed") for r in group]
        distinct = None not in seeds and len(set(seeds)) == len(seeds)
        out.extend([group] if distinct else [[r] for r in group])
    return sorted(out, key=lambda g: natural_key(g[0].dir))


def is_seed(override: str) -> bool:
    return override.lstrip("+").partition("=")[0] == "seed"


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


def group_scores(group: list[Run], key: str) -> list[float]:
    return [
        r.results[key]
        for r in group
        if isinstance(r.results.get(key), (int, float))
        and not isinstance(r.results.get(key), bool)
        and math.isfinite(r.results[key])
    ]


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return []


def knn_curve(run_dir: Path, at_init: Optional[float] = None) -> list[tuple[float, float]]:
    """val/knn_top1 per epoch from the Lightning CSV log(s) under <run>/csv/ (x: epochs completed)."""
    points = {0.0: at_init} if isinstance(at_init, (int, float)) else {}
    for metrics_csv in sorted((run_dir / "csv").rglob("metrics.csv")) if (run_dir / "csv").is_dir() else []:
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                value, epoch = row.get("val/knn_top1"), row.get("epoch")
                if value and epoch:
                    points[float(epoch) + 1] = float(value)
    return sorted(points.items())


def collect(root: Path) -> list[Run]:
    root = Path(root)
    runs, seen = [], set()
    for path in sorted(root.rglob("results.json"), key=natural_key):
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            results = {"status": "failed", "error": f"unreadable results.json: {err}"}
        run_dir = path.parent
        seen.add(run_dir)
        runs.append(
            Run(
                run_dir,
                _label(root, run_dir),
                results,
                _overrides(run_dir),
                knn_curve(run_dir, results.get("knn_top1_at_init")),
            )
        )
    # Jobs that never wrote results.json (killed, out of memory, still running) are listed too.
    for hydra_dir in sorted(root.rglob(".hydra"), key=natural_key):
        run_dir = hydra_dir.parent
        # (not a sweep's own dir, nor an attempt that resumed another run dir and left only a note)
        if run_dir not in seen and not (run_dir / "multirun.yaml").exists() and not (run_dir / "RESUMED.txt").exists():
            cfg = load_yaml(hydra_dir / "config.yaml")
            runs.append(
                Run(
                    run_dir,
                    _label(root, run_dir),
                    {
                        "status": "failed",
                        "error": "no results.json (the job was killed or is still running)",
                        "method": _get(cfg, "method", "name"),
                        "data": _get(cfg, "data", "name"),
                        "backbone": _get(cfg, "backbone", "name"),
                    },
                    _overrides(run_dir),
                    knn_curve(run_dir),
                )
            )
    runs.sort(key=lambda r: natural_key(r.dir))
    return runs


def load_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _get(cfg: dict, *keys):
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, (str, int, float)) else None


def _label(root: Path, run_dir: Path) -> str:
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    return str(rel)


def varied_overrides(runs: list[Run]) -> dict[Path, str]:
    """The overrides that differ between jobs (what a sweep varied), per run."""
    if not runs:
        return {}
    common = set(runs[0].overrides).intersection(*(r.overrides for r in runs[1:]))
    return {r.dir: " ".join(_short(o) for o in r.overrides if o not in common) for r in runs}


def _short(override: str) -> str:
    key, _, value = override.partition("=")
    try:
        value = value if value.lstrip("-").isdigit() else f"{float(value):.3g}"
    except ValueError:
        pass
    return f"{key}={value}"


def data_label(results: dict) -> str:
    pre, data = results.get("pretrain_data"), results.get("data")
    return f"{pre}→{data}" if pre and data and pre != data else str(data or "-")
