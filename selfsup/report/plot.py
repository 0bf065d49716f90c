"""report.png: accuracy bars per run (or per set of seeds) and kNN top-1 over epochs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from selfsup.report.runs import ACCURACIES, Run, group_scores, is_seed, mean_spread, seed_groups, varied_overrides


def _short_label(run: Run) -> str:
    """'#3' for job 3 of a multirun, the run name for a timestamped single run."""
    name = run.dir.name
    if m := re.match(r"^(\d+)_", name):
        return f"#{m[1]}"
    if m := re.match(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_(.+)$", name):
        return m[1]
    return name


def _plot_label(run: Run, varied: str, width: int = 34) -> str:
    """'#3 simclr' plus what the sweep varied (last key component), wrapped to a few lines."""
    params = " ".join(
        f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (o.partition("=") for o in varied.split()) if k != "method"
    )  # the method is named anyway
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
    params = " ".join(o for o in varied.get(group[0].dir, "").split() if not is_seed(o))
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
    varied = varied_overrides(runs)
    groups = seed_groups(runs)  # one bar and one curve per run, or per set of runs differing only in seed
    names = [_group_label(g, varied) for g in groups]
    accuracies = [(k, name) for k, name in ACCURACIES if any(group_scores(g, k) for g in groups)]
    lines_per_label = max([n.count("\n") + 1 for n in names] or [1])
    row = max(0.3 * max(1, len(accuracies)), 0.22 * lines_per_label) + 0.15
    height = max(4.5, row * len(groups) + 2.0)
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(15, height), gridspec_kw={"width_ratios": [1.15, 1]})
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")

    width = 0.8 / max(1, len(accuracies))
    extent = []  # (low, high) of every bar and its spread: the accuracy axis is fitted to them
    for j, (key, name) in enumerate(accuracies):
        ys = [i + (j - (len(accuracies) - 1) / 2) * width for i in range(len(groups))]
        stats = [mean_spread(group_scores(g, key)) if group_scores(g, key) else None for g in groups]
        spreads = [st[1] if st else 0.0 for st in stats]
        drawn = bars.barh(
            ys,
            [st[0] if st else 0.0 for st in stats],
            height=width,
            label=name,
            color=f"C{j}",
            xerr=spreads if any(spreads) else None,
            capsize=3,
            error_kw={"elinewidth": 1},
        )
        bars.bar_label(
            drawn,
            labels=[
                "-" if st is None else f"{st[0]:.4f}" + (f" ± {st[1]:.4f}" if len(g) > 1 else "")
                for st, g in zip(stats, groups)
            ],
            padding=4,
            fontsize=8,
        )
        extent += [(st[0] - st[1], st[0] + st[1]) for st in stats if st]
    bars.set_yticks(range(len(groups)), names, fontsize=8)
    for tick, i in zip(bars.get_yticklabels(), range(len(groups))):
        tick.set_color(colors(i % colors.N))  # the same colour as the run's kNN curve
    bars.invert_yaxis()
    left, right = fitted_range(extent)
    bars.set_xlim(left, right + 0.3 * (right - left))  # room for the value labels
    bars.set_xlabel(
        "top-1 accuracy after training" + (f" (axis from {left:.2f}: fitted to the data)" if left > 0 else "")
    )
    bars.set_title("Accuracy per run" + (" (mean ± std over seeds)" if any(len(g) > 1 for g in groups) else ""))
    bars.grid(axis="x", alpha=0.3)
    if accuracies:
        bars.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.5 / height - 0.06),
            ncol=len(accuracies),
            fontsize=8,
            frameon=False,
        )

    for i, (g, name) in enumerate(zip(groups, names)):
        xs, means, spreads = _mean_curve(g)
        if not xs:
            continue
        color = colors(i % colors.N)
        curves.plot(
            xs,
            means,
            marker="o",
            markersize=4,
            color=color,
            label=name.split("\n")[0] if len(groups) > 1 else name.replace("\n", " "),
        )
        if len(g) > 1:
            curves.fill_between(
                xs,
                [m - e for m, e in zip(means, spreads)],
                [m + e for m, e in zip(means, spreads)],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
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
        curves.legend(
            fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if len(groups) <= 20 else 2, frameon=False
        )
    failed = len(runs) - len(ok)
    fig.suptitle(f"{len(ok)} run(s)" + (f", {failed} failed (listed in report.md)" if failed else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
