"""How many steps a method needs before its kNN top-1 clears its value at init, for the methods whose
`*_cpu_short` recipe does not learn within the learning tests' budget (a benchmark, not a test: the
answer costs more CPU than the suite can afford).

    python benchmarks/steps_to_learn.py                                   # simsiam, vicreg, dino; ~30 min on 2 cores
    python benchmarks/steps_to_learn.py methods=byol epochs=16 eval_every_s=30

Options (key=value): methods (simsiam,vicreg,dino), seed (0), epochs (12: the recipe's schedule is
stretched to this many epochs of the CIFAR sample, 39 steps each), eval_every_s (kNN every this many
seconds of training, 45), data_root (../shared/data/cifar10-subset), out (outputs/steps_to_learn/<time>).

Each method runs `train.py experiment=<method>_cpu_short trainer.max_epochs=<epochs>` with the peer
table's clock (benchmarks/peer_table.py, WallClockBudget: kNN at init and every eval_every_s seconds of
training, evaluation not counted), one run after the other. Writes <out>/results.md (per method: kNN
at init, best and last, and the first step whose kNN is >= init + 0.03), results.json (the curves) and
knn_vs_steps.png; prints their paths.
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

DEFAULTS = {"methods": "simsiam,vicreg,dino", "seed": "0", "epochs": "12", "eval_every_s": "45",
            "data_root": str(REPO.parent / "shared" / "data" / "cifar10-subset"), "out": None}


def parse_options(argv: list[str]) -> dict:
    options = key_values(argv, DEFAULTS)
    options["methods"] = [m for m in options["methods"].split(",") if m]
    missing = [m for m in options["methods"] if not (REPO / "conf" / "experiment" / f"{m}_cpu_short.yaml").is_file()]
    if missing:
        raise SystemExit(f"no conf/experiment/<method>_cpu_short.yaml for {', '.join(missing)}")
    options["seed"], options["epochs"], options["eval_every_s"] = (
        int(options["seed"]), int(options["epochs"]), float(options["eval_every_s"]))
    return options


def first_step_clear(curve: list[dict], gain: float = MIN_GAIN) -> int | None:
    """The first evaluated step whose kNN top-1 is at least `gain` above the curve's first point (init)."""
    init = curve[0]["knn_top1"]
    return next((p["step"] for p in curve[1:] if p["knn_top1"] >= init + gain), None)


def markdown(runs: list[dict], info: dict) -> str:
    lines = [f"# Steps to learn: kNN top-1 against optimizer steps, `*_cpu_short` recipes stretched to "
             f"{info['epochs']} epochs", "",
             f"{info['date']}, {info['machine']}; seed {info['seed']}; CIFAR sample, kNN k=200 T=0.1 on the val split, "
             f"every ~{info['eval_every_s']:g} s of training.", "",
             f"| method | kNN at init | best (step) | last (step) | first step >= init + {MIN_GAIN} | training s |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        curve = run["curve"]
        best = max(curve[1:] or curve, key=lambda p: p["knn_top1"])
        clear = first_step_clear(curve)
        clear = clear if clear is not None else f"not within {curve[-1]['step']}"
        lines.append(f"| {run['method']} | {curve[0]['knn_top1']:.3f} | {best['knn_top1']:.3f} ({best['step']}) "
                     f"| {curve[-1]['knn_top1']:.3f} ({curve[-1]['step']}) "
                     f"| {clear} | {run['train_seconds']:.0f} |")
    lines += ["", f"Command: `{info['command']}`", ""]
    return "\n".join(lines)


def plot(path: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        ax.plot([p["step"] for p in run["curve"]], [p["knn_top1"] for p in run["curve"]], marker="o", label=run["method"])
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("kNN top-1 (val)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_options(argv)
    out_dir = Path(options["out"] or REPO / "outputs" / "steps_to_learn" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), **{k: options[k] for k in
            ("seed", "epochs", "eval_every_s")}, "command": " ".join(["python benchmarks/steps_to_learn.py", *argv])}
    paths = {"markdown": out_dir / "results.md", "json": out_dir / "results.json", "plot": out_dir / "knn_vs_steps.png"}
    runs = []
    for method in options["methods"]:
        run = run_project(method, options["seed"], float("inf"), options["eval_every_s"], options["data_root"],
                          out_dir / "runs" / method, overrides=(f"trainer.max_epochs={options['epochs']}",))
        clear = first_step_clear(run["curve"])
        print(f"{method}: kNN {run['knn_top1_at_init']:.4f} -> {run['knn_top1']:.4f} in {run['steps']} steps; "
              f"first step >= init + {MIN_GAIN}: {clear}", flush=True)
        runs.append(run)
        paths["markdown"].write_text(markdown(runs, info))
        paths["json"].write_text(json.dumps({"info": info, "runs": runs}, indent=2) + "\n")
        plot(paths["plot"], runs)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
