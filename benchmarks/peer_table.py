"""`make table`: each method of this repository against the same method built from lightly's parts, for
the same wall-clock training budget on the same machine, scored by the same kNN evaluator.

    python benchmarks/peer_table.py                                        # 4 methods x 2 seeds, ~1 h on 2 cores
    python benchmarks/peer_table.py methods=byol seeds=0 budget_s=30       # a small version
    make table ARGS='methods=simclr,byol seeds=0,1,2 budget_s=600 eval_every_s=120'

Options (key=value): methods (simclr,mocov2,byol,barlow_twins), seeds (0,1), budget_s (seconds of
training per run, 180), eval_every_s (kNN every this many seconds of training, 30), data_root (an
ImageFolder tree, default ../shared/data/cifar10-subset), out (default outputs/table/<time>).

For every method and seed, one run after the other (never two at once):
- project: `train.py experiment=<method>_cpu_short` (conf/experiment/), the method's short-budget
  recipe, as a user runs it, plus the `WallClockBudget` callback below;
- peer: `benchmarks/lightly_peers.py`, a plain PyTorch loop from lightly's components with the recipe
  of lightly's own CIFAR-10 benchmark (what was adapted is in that file's docstring).
Both train the project's ResNet-18 (`build_backbone`, the recipe's stem, resolution, batch, precision
and memory format) on the recipe's data, for `budget_s` seconds of training: the clock (`TrainingClock`)
starts at the first batch and stops while evaluating, so evaluation costs neither side any training.
Both are scored by `knn_top1` (selfsup.eval.knn, eval.knn's k=200, T=0.1) on backbone features of the
project's augmentation-free evaluation loaders (labelled train split as bank, val split as queries), at
init, at the first step after every `eval_every_s` seconds of training, and when the budget is spent;
and at the end by the project's offline linear probe on those final features. A run that finishes its
recipe's epochs before the budget ends there; its last point is its kNN at T.

Writes <out>/results.md (the table), results.json (every run: curve, steps, training and evaluation
seconds) and knn_vs_seconds.png (kNN against seconds of training, one panel per method, mean and
spread over seeds); prints their paths.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from selfsup.config.evaluation import LinearConfig  # noqa: E402
from selfsup.eval.features import EvaluatedBackbone, extract_features  # noqa: E402
from selfsup.eval.knn import knn_top1  # noqa: E402
from selfsup.eval.linear import linear_probe  # noqa: E402

METHODS = ("simclr", "mocov2", "byol", "barlow_twins", "simsiam", "vicreg", "mocov3", "dino", "swav", "nnclr")
DEFAULTS = {
    "methods": ",".join(METHODS),
    "seeds": "0,1",
    "budget_s": 180.0,  # the recipes' epochs are sized for ~3 minutes on 2 CPU cores
    "eval_every_s": 30.0,
    "data_root": str(REPO.parent / "shared" / "data" / "cifar10-subset"),
    "out": None,
}
SIDES = ("project", "peer")
MIN_GAIN = 0.03  # the table marks a method whose mean kNN gain over init is below this


def key_values(argv: list[str], defaults: dict) -> dict:
    """`defaults` updated from key=value arguments (values as strings); an unknown key fails in one line."""
    options = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"unknown option {arg!r}: use key=value with key one of {', '.join(options)}")
        options[key] = value
    return options


def parse_options(argv: list[str]) -> dict:
    options = key_values(argv, DEFAULTS)
    options["methods"] = [m for m in str(options["methods"]).split(",") if m]
    unknown = sorted(set(options["methods"]) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}: methods= takes a list of {', '.join(METHODS)}")
    options["seeds"] = [int(s) for s in str(options["seeds"]).split(",") if s]
    options["budget_s"], options["eval_every_s"] = float(options["budget_s"]), float(options["eval_every_s"])
    if options["budget_s"] <= 0 or options["eval_every_s"] <= 0:
        raise SystemExit("budget_s and eval_every_s must be > 0")
    return options


# --- the instrument both sides share ----------------------------------------------------------
class Evaluator:
    """kNN top-1 (and, on request, the offline linear probe) of a backbone's frozen features of the
    augmentation-free evaluation loaders, exactly as selfsup.pipeline scores a run's final weights."""

    def __init__(self, datamodule, knn_cfg, bf16: bool):
        self.datamodule, self.k, self.temperature, self.bf16 = datamodule, knn_cfg.k, knn_cfg.temperature, bf16
        self.features: tuple[torch.Tensor, ...] = ()  # of the last evaluation: (train_x, train_y, val_x, val_y)
        self._batches: tuple[list, list] | None = None

    def __call__(self, backbone) -> float:
        if self._batches is None:  # the transform is deterministic: decode each CIFAR-size split once, keep it
            self._batches = tuple(list(loader) for loader in self.datamodule.evaluation_loaders())
        device = next(backbone.parameters()).device
        train_batches, val_batches = self._batches
        self.features = (
            *extract_features(backbone, train_batches, device, self.bf16, "embedding train split"),
            *extract_features(backbone, val_batches, device, self.bf16, "embedding val split"),
        )
        return knn_top1(*self.features, self.datamodule.cfg.num_classes, self.k, self.temperature)

    def linear_top1(self) -> float:
        """The project's default linear probe (eval/default.yaml) on the last evaluation's features."""
        return linear_probe(*self.features, self.datamodule.cfg.num_classes, **asdict(LinearConfig()))["linear_top1"]


class TrainingClock:
    """Seconds of training, the clock stopped while it evaluates: kNN top-1 at init (0 s), at the
    first step after every `eval_every_s` seconds of training, and at the step that spends `budget_s`."""

    def __init__(
        self,
        evaluate: Callable[[torch.nn.Module], float],
        budget_s: float,
        eval_every_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.evaluate, self.budget_s, self.eval_every_s, self.clock = evaluate, budget_s, eval_every_s, clock
        self.points: list[dict] = []  # {"seconds", "step", "knn_top1"}
        self.eval_seconds = 0.0
        self._started = self._paused = 0.0
        self._next_eval = eval_every_s

    def start(self, backbone) -> None:
        self._record(0.0, 0, backbone)
        self._started, self._paused = self.clock(), 0.0

    @property
    def seconds(self) -> float:
        return self.clock() - self._started - self._paused

    def step_done(self, step: int, backbone) -> bool:
        """Call after every optimizer step; True once the budget is spent (then stop training)."""
        seconds = self.seconds
        spent = seconds >= self.budget_s
        if spent or seconds >= self._next_eval:
            self._record(seconds, step, backbone)
            self._next_eval = (seconds // self.eval_every_s + 1) * self.eval_every_s
        return spent

    def finish(self, step: int, backbone) -> None:
        """Training ended, by the budget or by its last epoch: the final weights are the last point."""
        if self.points[-1]["step"] != step:
            self._record(self.seconds, step, backbone)

    def _record(self, seconds: float, step: int, backbone) -> None:
        paused = self.clock()
        knn = self.evaluate(backbone)
        took = self.clock() - paused
        self._paused += took
        self.eval_seconds += took
        self.points.append({"seconds": round(seconds, 2), "step": step, "knn_top1": knn})

    def summary(self) -> dict:
        last = self.points[-1]
        return {
            "knn_top1_at_init": self.points[0]["knn_top1"],
            "knn_top1": last["knn_top1"],
            "steps": last["step"],
            "train_seconds": last["seconds"],
            "eval_seconds": round(self.eval_seconds, 2),
            "curve": self.points,
        }


class WallClockBudget(pl.Callback):
    """The project side's `TrainingClock` inside train.py (added as `+callbacks.wall_clock=...`): stops
    training once `budget_s` seconds of training are spent and writes the clock's summary, with the
    linear probe of the final weights, to `out` (JSON)."""

    def __init__(self, budget_s: float, eval_every_s: float, out: str):
        self.budget_s, self.eval_every_s, self.out = budget_s, eval_every_s, Path(out)

    @staticmethod
    def evaluated(pl_module):
        """What the run's own evaluation scores: the encoder the paper evaluates (a DINO teacher), fed the
        method's evaluation input (colorization: the lightness)."""
        return EvaluatedBackbone(pl_module.evaluated_backbone(), pl_module.evaluation_input)

    def on_train_start(self, trainer, pl_module):
        cfg = pl_module.cfg
        self.evaluator = Evaluator(trainer.datamodule, cfg.eval.knn, bf16="bf16" in str(cfg.trainer.precision))
        self.clock = TrainingClock(self.evaluator, self.budget_s, self.eval_every_s)
        self.clock.start(self.evaluated(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.clock.step_done(trainer.global_step, self.evaluated(pl_module)):
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self.clock.finish(trainer.global_step, self.evaluated(pl_module))
        summary = {**self.clock.summary(), "linear_top1": self.evaluator.linear_top1()}
        self.out.write_text(json.dumps(summary, indent=2) + "\n")


# --- one run of each side ---------------------------------------------------------------------
def _run(command: list[str], run_dir: Path, summary: Path, side: str, method: str, seed: int) -> dict:
    """Run one side in a process of its own (logging to run_dir/run.log); its summary plus the wall
    seconds of the whole process (start-up and evaluation included)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "run.log", "w") as log:
        proc = subprocess.run(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
    if proc.returncode != 0 or not summary.is_file():
        tail = (run_dir / "run.log").read_text()[-3000:]
        raise RuntimeError(
            f"{side} {method} seed {seed} failed (exit {proc.returncode}), log {run_dir / 'run.log'}:\n{tail}"
        )
    return {
        "method": method,
        "side": side,
        "seed": seed,
        **json.loads(summary.read_text()),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }


def run_project(
    method: str,
    seed: int,
    budget_s: float,
    eval_every_s: float,
    data_root: str,
    run_dir: Path,
    overrides: tuple[str, ...] = (),
) -> dict:
    summary = run_dir / "clock.json"
    command = [
        sys.executable,
        "train.py",
        f"experiment={method}_cpu_short",
        *overrides,
        f"data.root={data_root}",
        f"seed={seed}",
        "resume=never",
        "eval.knn_at_init=false",
        "trainer.enable_progress_bar=false",
        "images=false",
        "+callbacks.wall_clock._target_=benchmarks.peer_table.WallClockBudget",
        f"+callbacks.wall_clock.budget_s={budget_s}",
        f"+callbacks.wall_clock.eval_every_s={eval_every_s}",
        f"+callbacks.wall_clock.out={summary}",
        f"hydra.run.dir={run_dir}",
    ]
    return _run(command, run_dir, summary, "project", method, seed)


def run_peer(method: str, seed: int, budget_s: float, eval_every_s: float, data_root: str, run_dir: Path) -> dict:
    summary = run_dir / "clock.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "lightly_peers.py"),
        f"method={method}",
        f"seed={seed}",
        f"budget_s={budget_s}",
        f"eval_every_s={eval_every_s}",
        f"data_root={data_root}",
        f"out={summary}",
    ]
    return _run(command, run_dir, summary, "peer", method, seed)


RUNNERS = {"project": run_project, "peer": run_peer}


# --- the table --------------------------------------------------------------------------------
def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: list[dict]) -> dict:
    """Per method and side: mean and spread over seeds of the final kNN, the gain over init, the
    linear probe, steps and seconds; per method the project/peer ratio of mean final kNN."""
    table = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        row = {}
        for side in SIDES:
            mine = [r for r in runs if r["method"] == method and r["side"] == side]
            if not mine:
                continue
            row[side] = {
                "seeds": [r["seed"] for r in mine],
                "knn_top1": mean_spread([r["knn_top1"] for r in mine]),
                "knn_top1_at_init": mean_spread([r["knn_top1_at_init"] for r in mine]),
                "gain": mean_spread([r["knn_top1"] - r["knn_top1_at_init"] for r in mine]),
                "linear_top1": mean_spread([r["linear_top1"] for r in mine]),
                "steps": statistics.fmean(r["steps"] for r in mine),
                "train_seconds": statistics.fmean(r["train_seconds"] for r in mine),
                "eval_seconds": statistics.fmean(r["eval_seconds"] for r in mine),
                "diverged_at_step": [r["diverged_at_step"] for r in mine if r.get("diverged_at_step")],
            }
        if len(row) == len(SIDES):
            row["ratio"] = row["project"]["knn_top1"][0] / row["peer"]["knn_top1"][0]
        table[method] = row
    return table


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def _pm(side: dict, key: str, sign: str = "") -> str:
    """A side's mean over seeds, ± the spread where there is one (one seed has none to show, not a zero)."""
    mean, spread = side[key]
    return f"{mean:{sign}.3f}" + (f" ± {spread:.3f}" if len(side["seeds"]) > 1 else "")


def _steps(side: dict | None) -> str:
    if not side:
        return "–"
    diverged = ", ".join(map(str, side.get("diverged_at_step", [])))
    return f"{side['steps']:.0f}" + (f" (loss non-finite at step {diverged}: stopped)" if diverged else "")


def markdown(table: dict, info: dict) -> str:
    lines = [
        f"# Peer table: this repository vs lightly {info['lightly']}, equal wall-clock",
        "",
        f"{info['date']}, {info['machine']}, torch {info['torch']}; training budget T = {info['budget_s']:g} s per run "
        f"(evaluation not counted), seeds {', '.join(map(str, info['seeds']))}; kNN top-1 (k=200, T=0.1) on the "
        f"{info['val_images']} val images, mean ± std over seeds. Project: `train.py experiment=<method>_cpu_short`; "
        "peer: lightly's CIFAR-10 benchmark recipe (benchmarks/lightly_peers.py). Same backbone, resolution, batch, "
        "precision, data and evaluator.",
        "",
        "| method | project kNN at T | peer kNN at T | ratio | project gain over init | peer gain over init "
        "| project linear | peer linear | steps project / peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in table.items():
        project, peer = row.get("project"), row.get("peer")
        cell = lambda side, key: _pm(side, key) if side else "–"  # noqa: E731

        def gain(side):
            if not side:
                return "–"
            low = "" if side["gain"][0] >= MIN_GAIN else f" **< {MIN_GAIN}**"
            return f"{_pm(side, 'gain', '+')} (init {side['knn_top1_at_init'][0]:.3f})" + low

        ratio = f"{row['ratio']:.3f}" if "ratio" in row else "–"
        steps = " / ".join(_steps(side) for side in (project, peer))
        lines.append(
            f"| {method} | {cell(project, 'knn_top1')} | {cell(peer, 'knn_top1')} | {ratio} | {gain(project)} "
            f"| {gain(peer)} | {cell(project, 'linear_top1')} | {cell(peer, 'linear_top1')} | {steps} |"
        )
    lines += ["", f"Command: `{info['command']}`", ""]
    return "\n".join(lines)


def curve_band(runs: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """kNN against seconds over seeds: the i-th points of the seeds' curves (taken at about the same
    seconds, the first step after each eval_every_s) as mean seconds, mean kNN and std kNN."""
    n = min(len(r["curve"]) for r in runs)
    seconds = [statistics.fmean(r["curve"][i]["seconds"] for r in runs) for i in range(n)]
    knn = [mean_spread([r["curve"][i]["knn_top1"] for r in runs]) for i in range(n)]
    return seconds, [m for m, _ in knn], [s for _, s in knn]


def plot(path: Path, runs: list[dict], budget_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in runs))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for side, color in zip(SIDES, ("tab:blue", "tab:orange")):
            mine = [r for r in runs if r["method"] == method and r["side"] == side]
            if not mine:
                continue
            seconds, mean, std = curve_band(mine)
            ax.plot(seconds, mean, marker="o", color=color, label="this repository" if side == "project" else "lightly")
            ax.fill_between(
                seconds, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2
            )
        ax.axvline(budget_s, color="grey", linestyle=":", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel("seconds of training")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("kNN top-1 (val)")
    axes[0][0].legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: Path, runs: list[dict], options: dict, info: dict) -> dict[str, Path]:
    table = aggregate(runs)
    paths = {
        "markdown": out_dir / "results.md",
        "json": out_dir / "results.json",
        "plot": out_dir / "knn_vs_seconds.png",
    }
    paths["markdown"].write_text(markdown(table, info))
    paths["json"].write_text(json.dumps({"info": info, "table": table, "runs": runs}, indent=2) + "\n")
    plot(paths["plot"], runs, options["budget_s"])
    return paths


def run_info(options: dict, argv: list[str]) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        lightly = version("lightly")
    except PackageNotFoundError:
        lightly = "(not installed)"
    val = Path(options["data_root"]) / "val"
    return {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "torch": torch.__version__,
        "lightly": lightly,
        "budget_s": options["budget_s"],
        "eval_every_s": options["eval_every_s"],
        "seeds": options["seeds"],
        "val_images": sum(1 for p in val.rglob("*") if p.is_file()) if val.is_dir() else 0,
        "command": " ".join(["python benchmarks/peer_table.py", *argv]),
    }


def main(argv: list[str] | None = None) -> dict[str, Path]:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_options(argv)
    out_dir = Path(options["out"] or REPO / "outputs" / "table" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info(options, argv)
    runs = []
    for method in options["methods"]:
        for seed in options["seeds"]:
            for side in SIDES:
                run = RUNNERS[side](
                    method,
                    seed,
                    options["budget_s"],
                    options["eval_every_s"],
                    options["data_root"],
                    out_dir / "runs" / f"{method}-s{seed}-{side}",
                )
                print(
                    f"{method} seed {seed} {side}: kNN {run['knn_top1_at_init']:.4f} -> {run['knn_top1']:.4f} "
                    f"in {run['steps']} steps, {run['train_seconds']:.0f} s training + {run['eval_seconds']:.0f} s "
                    f"evaluation ({run['wall_seconds']:.0f} s wall)",
                    flush=True,
                )
                runs.append(run)
                write_outputs(out_dir, runs, options, info)  # a partial table after every run
    paths = write_outputs(out_dir, runs, options, info)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
