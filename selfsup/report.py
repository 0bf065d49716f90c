"""Local comparison of runs, no W&B needed: every results.json below a directory (an outputs dir,
a multirun/sweep dir, a single run) and its CSV log become report.md (a table, failed jobs listed,
Optuna's best parameters when present) and report.png (accuracy bars per run, kNN top-1 over
epochs per run). `python scripts/compare.py <dir>`, `make report DIR=<dir>`, and automatically at
the end of every multirun (`SweepReport`, a Hydra callback in conf/hydra/default.yaml)."""
from __future__ import annotations

import csv
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from hydra.experimental.callback import Callback

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


def score_line(results: dict) -> Optional[str]:
    """The run's final accuracies on one line, kNN with its change since initialisation, e.g.
    `final: kNN top-1 0.4123 (+0.0512 from init 0.3611), linear top-1 0.5010`; None without any."""
    parts = []
    for key, label in ACCURACIES:
        value = results.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        part = f"{label} {value:.4f}"
        at_init = results.get(f"{key}_at_init")
        if isinstance(at_init, (int, float)) and not isinstance(at_init, bool):
            part += f" ({value - at_init:+.4f} from init {at_init:.4f})"
        parts.append(part)
    return "final: " + ", ".join(parts) if parts else None


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """The completed runs, those that differ only in their seed grouped together (same method, data,
    backbone and overrides but seed=, distinct seeds), in run order; any other run alone."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.failed:
            continue
        res = r.results
        key = (res.get("method"), _data(res), res.get("backbone"),
               tuple(sorted(o for o in r.overrides if not _is_seed(o))))
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        seeds = [r.results.get("seed") for r in group]
        distinct = None not in seeds and len(set(seeds)) == len(seeds)
        out.extend([group] if distinct else [[r] for r in group])
    return sorted(out, key=lambda g: _natural_key(g[0].dir))


def _is_seed(override: str) -> bool:
    return override.lstrip("+").partition("=")[0] == "seed"


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


def _scores(group: list[Run], key: str) -> list[float]:
    return [r.results[key] for r in group if isinstance(r.results.get(key), (int, float))
            and not isinstance(r.results.get(key), bool) and math.isfinite(r.results[key])]


def _natural_key(path: Path):
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
    for path in sorted(root.rglob("results.json"), key=_natural_key):
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            results = {"status": "failed", "error": f"unreadable results.json: {err}"}
        run_dir = path.parent
        seen.add(run_dir)
        runs.append(Run(run_dir, _label(root, run_dir), results, _overrides(run_dir),
                        knn_curve(run_dir, results.get("knn_top1_at_init"))))
    # Jobs that never wrote results.json (killed, out of memory, still running) are listed too.
    for hydra_dir in sorted(root.rglob(".hydra"), key=_natural_key):
        run_dir = hydra_dir.parent
        # (not a sweep's own dir, nor an attempt that resumed another run dir and left only a note)
        if run_dir not in seen and not (run_dir / "multirun.yaml").exists() and not (run_dir / "RESUMED.txt").exists():
            cfg = _load_yaml(hydra_dir / "config.yaml")
            runs.append(Run(run_dir, _label(root, run_dir), {
                "status": "failed", "error": "no results.json (the job was killed or is still running)",
                "method": _get(cfg, "method", "name"), "data": _get(cfg, "data", "name"),
                "backbone": _get(cfg, "backbone", "name"),
            }, _overrides(run_dir), knn_curve(run_dir)))
    runs.sort(key=lambda r: _natural_key(r.dir))
    return runs


def _load_yaml(path: Path) -> dict:
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


def _varied_overrides(runs: list[Run]) -> dict[Path, str]:
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


def _short_label(run: Run) -> str:
    """'#3' for job 3 of a multirun, the run name for a timestamped single run."""
    name = run.dir.name
    if m := re.match(r"^(\d+)_", name):
        return f"#{m[1]}"
    if m := re.match(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_(.+)$", name):
        return m[1]
    return name


def _fmt_acc(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _fmt_time(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _data(results: dict) -> str:
    pre, data = results.get("pretrain_data"), results.get("data")
    return f"{pre}→{data}" if pre and data and pre != data else str(data or "-")


def markdown(root: Path, runs: list[Run]) -> str:
    ok = [r for r in runs if not r.failed]
    failed = [r for r in runs if r.failed]
    varied = _varied_overrides(runs)
    accuracies = [(k, name) for k, name in ACCURACIES if any(k in r.results for r in ok)] or list(ACCURACIES[:2])
    header = ["run", "method", "data", "backbone", "epochs", *(name for _, name in accuracies), "images/s", "time"]
    if any(varied.values()):
        header.append("overrides")
    lines = [f"# Runs under {root}", "", f"{len(runs)} job(s): {len(ok)} completed, {len(failed)} failed.  "]
    for key, name in accuracies:
        scored = [r for r in ok if isinstance(r.results.get(key), (int, float))]
        if scored:
            best = max(scored, key=lambda r: r.results[key])
            lines.append(f"Best {name}: **{best.results[key]:.4f}** ({best.label}).  ")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok:
        res = r.results
        epochs = res.get("epochs", "-") if "eval" not in res else f"eval={res['eval']}"
        row = [r.label, res.get("method", "-"), _data(res), res.get("backbone", "-"), epochs,
               *(_fmt_acc(res.get(k)) for k, _ in accuracies),
               f"{res['train_images_per_sec']:.1f}" if isinstance(res.get("train_images_per_sec"), (int, float)) else "-",
               _fmt_time(res.get("train_seconds"))]
        if "overrides" in header:
            row.append(varied.get(r.dir, "") or "-")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    if failed:
        lines += ["", "## Failed jobs", ""]
        for r in failed:
            what = " ".join(str(r.results.get(k)) for k in ("method", "data") if r.results.get(k))
            lines.append(f"- `{r.label}` {what} {varied.get(r.dir, '')}: {r.results.get('error', 'unknown error')}")
    repeated = [g for g in seed_groups(runs) if len(g) > 1]
    if repeated:
        lines += ["", "## Over seeds (runs that differ only in seed: mean ± sample std)", "",
                  "| runs | method | data | backbone | overrides | seeds | " + " | ".join(n for _, n in accuracies) + " |",
                  "|" + "---|" * (6 + len(accuracies))]
        for g in repeated:
            res = g[0].results
            cells = []
            for key, _ in accuracies:
                scores = _scores(g, key)
                cells.append("{:.4f} ± {:.4f}".format(*mean_spread(scores)) if scores else "-")
            overrides = " ".join(o for o in varied.get(g[0].dir, "").split() if not _is_seed(o)) or "-"
            lines.append(f"| {', '.join(r.label for r in g)} | {res.get('method', '-')} | {_data(res)} | "
                         f"{res.get('backbone', '-')} | {overrides} | {', '.join(str(r.results.get('seed')) for r in g)} | "
                         + " | ".join(cells) + " |")
    optuna = root / "optimization_results.yaml"
    if optuna.is_file():
        best = _load_yaml(optuna)
        lines += ["", "## Optuna best", "", f"best value: {best.get('best_value')}  ", "best parameters:", ""]
        lines += [f"- `{k}={v}`" for k, v in (best.get("best_params") or {}).items()]
        lines += ["", f"(from {optuna.name}; rerun one with `python train.py <those overrides>`)"]
    lines += ["", "![comparison](report.png)", ""]
    return "\n".join(lines)


def _plot_label(run: Run, varied: str, width: int = 34) -> str:
    """'#3 simclr' plus what the sweep varied (last key component), wrapped to a few lines."""
    params = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (o.partition("=") for o in varied.split())
                      if k != "method")  # the method is named anyway
    text = f"{_short_label(run)} {run.results.get('method', '?')}" + (f" {params}" if params else "")
    lines = textwrap.wrap(text, width) or [text]
    return "\n".join(lines[:3]) + ("..." if len(lines) > 3 else "")


def fitted_range(extent: list[tuple[float, float]]) -> tuple[float, float]:
    """An accuracy axis fitted to the data (low, high pairs), padded, within [0, 1]; [0, 1] without data.
    A fixed 0-1 axis flattens the differences a comparison is about (0.91 vs 0.93)."""
    if not extent:
        return 0.0, 1.0
    low, high = min(lo for lo, _ in extent), max(hi for _, hi in extent)
    pad = max(0.02, 0.15 * (high - low))
    return max(0.0, low - pad), min(1.0, high + pad)


def _group_label(group: list[Run], varied: dict[Path, str]) -> str:
    """`_plot_label` of the group's first run without its seed, e.g. '#0,#1,#2 simclr lr=0.1 (3 seeds)'."""
    params = " ".join(o for o in varied.get(group[0].dir, "").split() if not _is_seed(o))
    if len(group) == 1:
        return _plot_label(group[0], params)
    label = _plot_label(group[0], params).replace(_short_label(group[0]), ",".join(_short_label(r) for r in group), 1)
    return f"{label} ({len(group)} seeds)"


def _mean_curve(group: list[Run]) -> tuple[list[float], list[float], list[float]]:
    """The group's kNN curves averaged per epoch: (epochs, means, sample stds)."""
    at: dict[float, list[float]] = {}
    for r in group:
        for x, y in r.curve:
            at.setdefault(x, []).append(y)
    xs = sorted(at)
    stats = [mean_spread(at[x]) for x in xs]
    return xs, [m for m, _ in stats], [e for _, e in stats]


def plot(path: Path, runs: list[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MultipleLocator

    ok = [r for r in runs if not r.failed]
    varied = _varied_overrides(runs)
    groups = seed_groups(runs)  # one bar and one curve per run, or per set of runs differing only in seed
    names = [_group_label(g, varied) for g in groups]
    accuracies = [(k, name) for k, name in ACCURACIES if any(_scores(g, k) for g in groups)]
    lines_per_label = max([n.count("\n") + 1 for n in names] or [1])
    row = max(0.3 * max(1, len(accuracies)), 0.22 * lines_per_label) + 0.15
    height = max(4.5, row * len(groups) + 2.0)
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(15, height), gridspec_kw={"width_ratios": [1.15, 1]})
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")

    width = 0.8 / max(1, len(accuracies))
    extent = []  # (low, high) of every bar and its spread: the accuracy axis is fitted to them
    for j, (key, name) in enumerate(accuracies):
        ys = [i + (j - (len(accuracies) - 1) / 2) * width for i in range(len(groups))]
        stats = [mean_spread(_scores(g, key)) if _scores(g, key) else None for g in groups]
        spreads = [st[1] if st else 0.0 for st in stats]
        drawn = bars.barh(ys, [st[0] if st else 0.0 for st in stats], height=width, label=name, color=f"C{j}",
                          xerr=spreads if any(spreads) else None, capsize=3, error_kw={"elinewidth": 1})
        bars.bar_label(drawn, labels=["-" if st is None else f"{st[0]:.4f}" + (f" ± {st[1]:.4f}" if len(g) > 1 else "")
                                      for st, g in zip(stats, groups)], padding=4, fontsize=8)
        extent += [(st[0] - st[1], st[0] + st[1]) for st in stats if st]
    bars.set_yticks(range(len(groups)), names, fontsize=8)
    for tick, i in zip(bars.get_yticklabels(), range(len(groups))):
        tick.set_color(colors(i % colors.N))  # the same colour as the run's kNN curve
    bars.invert_yaxis()
    left, right = fitted_range(extent)
    bars.set_xlim(left, right + 0.3 * (right - left))  # room for the value labels
    bars.set_xlabel("top-1 accuracy after training" + (f" (axis from {left:.2f}: fitted to the data)" if left > 0 else ""))
    bars.set_title("Accuracy per run" + (" (mean ± std over seeds)" if any(len(g) > 1 for g in groups) else ""))
    bars.grid(axis="x", alpha=0.3)
    if accuracies:
        bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / height - 0.06), ncol=len(accuracies),
                    fontsize=8, frameon=False)

    for i, (g, name) in enumerate(zip(groups, names)):
        xs, means, spreads = _mean_curve(g)
        if not xs:
            continue
        color = colors(i % colors.N)
        curves.plot(xs, means, marker="o", markersize=4, color=color,
                    label=name.split("\n")[0] if len(groups) > 1 else name.replace("\n", " "))
        if len(g) > 1:
            curves.fill_between(xs, [m - e for m, e in zip(means, spreads)], [m + e for m, e in zip(means, spreads)],
                                color=color, alpha=0.2, linewidth=0)
    all_x = [x for r in ok for x, _ in r.curve]
    if all_x:
        curves.set_xlim(min(all_x) - 0.5, max(all_x) + 0.5)
        curves.xaxis.set_major_locator(MultipleLocator(max(1, round((max(all_x) - min(all_x)) / 10))))
        curves.set_ylim(*fitted_range([(y, y) for r in ok for _, y in r.curve]))
    curves.set_xlabel("epochs completed (0: at init)")
    curves.set_ylabel("val/knn_top1")
    curves.set_title("kNN top-1 over training (one line per run; band: ± std over seeds)")
    curves.grid(alpha=0.3)
    if any(r.curve for r in ok):
        curves.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if len(groups) <= 20 else 2,
                      frameon=False)
    failed = len(runs) - len(ok)
    fig.suptitle(f"{len(ok)} run(s)" + (f", {failed} failed (listed in report.md)" if failed else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(root: Path, out_dir: Optional[Path] = None) -> tuple[Path, Path]:
    root = Path(root).resolve()
    out_dir = Path(out_dir) if out_dir else root
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect(root)
    md_path, png_path = out_dir / "report.md", out_dir / "report.png"
    md_path.write_text(markdown(root, runs))
    plot(png_path, runs)
    failed = sum(r.failed for r in runs)
    print(f"report: {md_path}\nreport: {png_path}" + (f"\n{failed} of {len(runs)} job(s) failed: listed in report.md" if failed else ""),
          flush=True)
    return md_path, png_path


class SweepReport(Callback):
    """Hydra callback: a multirun (`-m`, `make sweep`) ends by writing report.md + report.png in
    its sweep directory. A reporting error is printed, never raised: the jobs' results stand."""

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            write_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # noqa: BLE001
            print(f"report: not written ({type(err).__name__}: {err}); run scripts/compare.py <sweep dir>",
                  file=sys.stderr, flush=True)
