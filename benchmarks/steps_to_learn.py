"""The learning atlas: kNN top-1 against optimizer steps and seconds for every method's `*_cpu_short`
recipe on the CIFAR sample, in one figure and one table (`make atlas`; a benchmark run once, one job at
a time, not a test: it costs more CPU than the suite can afford).

    python benchmarks/steps_to_learn.py                               # every recipe; ~1 h on 2 cores
    python benchmarks/steps_to_learn.py methods=byol,dino epochs=16 eval_every_s=30

Options (key=value): methods (all: every conf/experiment/*_cpu_short.yaml), seed (0), epochs (the
recipe's own; a number stretches every recipe's schedule to that many epochs of the CIFAR sample, 39
steps each), budget_s (600: training stops after this many seconds, the issue's 10-minute cap),
eval_every_s (kNN every this many seconds of training, 45), data_root (../shared/data/cifar10-subset),
out (outputs/atlas/<time>), merge (comma-separated results.json of earlier atlas runs, e.g. two halves
run on one core each: their runs are drawn and tabulated together, nothing is trained; the later of two
runs of one method wins).

Each method runs `train.py experiment=<method>_cpu_short` with the peer table's clock
(benchmarks/peer_table.py, WallClockBudget: kNN at init and every eval_every_s seconds of training,
evaluation not counted), one run after the other. Writes <out>/results.md (per method: kNN at init,
the first step >= init + 0.03, best, last, training seconds), results.json (the curves) and atlas.png
(kNN against steps and against seconds); prints their paths.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peer_table import MIN_GAIN, key_values, machine, run_project  # noqa: E402

DEFAULTS = {
    "methods": "all",
    "seed": "0",
    "epochs": None,
    "budget_s": "600",
    "eval_every_s": "45",
    "data_root": str(REPO.parent / "shared" / "data" / "cifar10-subset"),
    "out": None,
    "merge": None,
}


def all_methods() -> list[str]:
    return sorted(
        p.name.removesuffix("_cpu_short.yaml") for p in (REPO / "conf" / "experiment").glob("*_cpu_short.yaml")
    )


def parse_options(argv: list[str]) -> dict:
    options = key_values(argv, DEFAULTS)
    options["methods"] = (
        all_methods() if options["methods"] == "all" else [m for m in options["methods"].split(",") if m]
    )
    missing = [m for m in options["methods"] if not (REPO / "conf" / "experiment" / f"{m}_cpu_short.yaml").is_file()]
    if missing:
        raise SystemExit(f"no conf/experiment/<method>_cpu_short.yaml for {', '.join(missing)}")
    options["seed"], options["budget_s"], options["eval_every_s"] = (
        int(options["seed"]),
        float(options["budget_s"]),
        float(options["eval_every_s"]),
    )
    options["epochs"] = None if options["epochs"] is None else int(options["epochs"])
    return options


def first_step_clear(curve: list[dict], gain: float = MIN_GAIN) -> int | None:
    """The first evaluated step whose kNN top-1 is at least `gain` above the curve's first point (init)."""
    init = curve[0]["knn_top1"]
    return next((p["step"] for p in curve[1:] if p["knn_top1"] >= init + gain), None)


def markdown(runs: list[dict], info: dict) -> str:
    schedule = "their own schedules" if info["epochs"] is None else f"stretched to {info['epochs']} epochs"
    lines = [
        f"# The learning atlas: kNN top-1 against optimizer steps, `*_cpu_short` recipes ({schedule}, "
        f"at most {info['budget_s']:g} s of training each)",
        "",
        f"{info['date']}, {info['machine']}; seed {info['seed']}; CIFAR sample, kNN k=200 T=0.1 on the val split, "
        f"every ~{info['eval_every_s']:g} s of training.",
        "",
        f"| method | kNN at init | first step >= init + {MIN_GAIN} | best (step) | last (step) | training s |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        curve = run["curve"]
        best = max(curve[1:] or curve, key=lambda p: p["knn_top1"])
        clear = first_step_clear(curve)
        clear = clear if clear is not None else f"not within {curve[-1]['step']}"
        lines.append(
            f"| {run['method']} | {curve[0]['knn_top1']:.3f} | {clear} | {best['knn_top1']:.3f} ({best['step']}) "
            f"| {curve[-1]['knn_top1']:.3f} ({curve[-1]['step']}) | {run['train_seconds']:.0f} |"
        )
    lines += ["", f"Command: `{info['command']}`", ""]
    return "\n".join(lines)


def plot(path: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for x_key, ax in zip(("step", "seconds"), axes):
        for i, run in enumerate(runs):  # 15 methods: tab20's colours, a second line style past 10
            ax.plot(
                [p[x_key] for p in run["curve"]],
                [p["knn_top1"] for p in run["curve"]],
                marker=".",
                color=plt.cm.tab20(i % 20),
                linestyle="-" if i < 10 else "--",
                label=run["method"],
            )
        ax.set_xlabel("optimizer steps" if x_key == "step" else "training seconds")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kNN top-1 (val, k=200)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_options(argv)
    out_dir = Path(options["out"] or REPO / "outputs" / "atlas" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        **{k: options[k] for k in ("seed", "epochs", "budget_s", "eval_every_s")},
        "command": " ".join(["python benchmarks/steps_to_learn.py", *argv]),
    }
    paths = {"markdown": out_dir / "results.md", "json": out_dir / "results.json", "plot": out_dir / "atlas.png"}
    if options["merge"]:
        merged = {}
        for path in options["merge"].split(","):
            merged.update({run["method"]: run for run in json.loads(Path(path).read_text())["runs"]})
        runs = sorted(merged.values(), key=lambda run: run["method"])
        paths["markdown"].write_text(markdown(runs, info))
        paths["json"].write_text(json.dumps({"info": info, "runs": runs}, indent=2) + "\n")
        plot(paths["plot"], runs)
        options["methods"] = []
    else:
        runs = []
    for method in options["methods"]:
        stretch = () if options["epochs"] is None else (f"trainer.max_epochs={options['epochs']}",)
        run = run_project(
            method,
            options["seed"],
            options["budget_s"],
            options["eval_every_s"],
            options["data_root"],
            out_dir / "runs" / method,
            overrides=stretch,
        )
        clear = first_step_clear(run["curve"])
        print(
            f"{method}: kNN {run['knn_top1_at_init']:.4f} -> {run['knn_top1']:.4f} in {run['steps']} steps; "
            f"first step >= init + {MIN_GAIN}: {clear}",
            flush=True,
        )
        runs.append(run)
        paths["markdown"].write_text(markdown(runs, info))
        paths["json"].write_text(json.dumps({"info": info, "runs": runs}, indent=2) + "\n")
        plot(paths["plot"], runs)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
