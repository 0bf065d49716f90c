"""report.md: the runs as a Markdown table, failed jobs, means over seeds, Optuna's best; and the
one-line score a run prints at its end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from selfsup.report.runs import (
    ACCURACIES,
    Run,
    data_label,
    group_scores,
    is_seed,
    load_yaml,
    mean_spread,
    seed_groups,
    varied_overrides,
)


def score_line(results: dict) -> Optional[str]:
    """The run's final accuracies on one line, kNN with its change since initialisation, e.g.
    `final: kNN top-1 0.4123 (+0.0512 from init 0.3611), linear top-1 0.5010`; a run whose evaluation was
    skipped (unlabelled images): its last loss and the images it saw; None otherwise."""
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
    if parts:
        return "final: " + ", ".join(parts)
    if "eval_skipped" not in results:
        return None
    loss = (results.get("metrics") or {}).get("train/loss")
    trained = f"train/loss {loss:.4f} after " if isinstance(loss, float) else ""
    return (
        f"final: {trained}{results.get('steps')} steps, {results.get('images_seen')} images seen; no scores "
        f"(evaluation skipped: {results['eval_skipped']})"
    )


def _fmt_acc(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _fmt_time(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def markdown(root: Path, runs: list[Run]) -> str:
    ok = [r for r in runs if not r.failed]
    failed = [r for r in runs if r.failed]
    varied = varied_overrides(runs)
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
        row = [
            r.label,
            res.get("method", "-"),
            data_label(res),
            res.get("backbone", "-"),
            epochs,
            *(_fmt_acc(res.get(k)) for k, _ in accuracies),
            f"{res['train_images_per_sec']:.1f}" if isinstance(res.get("train_images_per_sec"), (int, float)) else "-",
            _fmt_time(res.get("train_seconds")),
        ]
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
        lines += [
            "",
            "## Over seeds (runs that differ only in seed: mean ± sample std)",
            "",
            "| runs | method | data | backbone | overrides | seeds | " + " | ".join(n for _, n in accuracies) + " |",
            "|" + "---|" * (6 + len(accuracies)),
        ]
        for g in repeated:
            res = g[0].results
            cells = []
            for key, _ in accuracies:
                scores = group_scores(g, key)
                cells.append("{:.4f} ± {:.4f}".format(*mean_spread(scores)) if scores else "-")
            overrides = " ".join(o for o in varied.get(g[0].dir, "").split() if not is_seed(o)) or "-"
            lines.append(
                f"| {', '.join(r.label for r in g)} | {res.get('method', '-')} | {data_label(res)} | "
                f"{res.get('backbone', '-')} | {overrides} | {', '.join(str(r.results.get('seed')) for r in g)} | "
                + " | ".join(cells)
                + " |"
            )
    optuna = root / "optimization_results.yaml"
    if optuna.is_file():
        best = load_yaml(optuna)
        lines += ["", "## Optuna best", "", f"best value: {best.get('best_value')}  ", "best parameters:", ""]
        lines += [f"- `{k}={v}`" for k, v in (best.get("best_params") or {}).items()]
        lines += ["", f"(from {optuna.name}; rerun one with `python train.py <those overrides>`)"]
    lines += ["", "![comparison](report.png)", ""]
    return "\n".join(lines)
