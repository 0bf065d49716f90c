"""The entry points' help and `cfg job` output."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, run_script


def test_train_help_shows_examples_and_no_internal_groups():
    proc = run_script("train.py", ["--help"], timeout=120)
    assert proc.returncode == 0 and "python train.py experiment=simclr_cifar10" in proc.stdout
    assert "method: " in proc.stdout and "schema/" not in proc.stdout, proc.stdout


def test_eval_help_loads_neither_torch_nor_hydras_slow_group_listing():
    script = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules))  # Hydra exits after --help\n"
        "from hydra._internal.hydra import Hydra\n"
        "def slow(*args, **kwargs): raise AssertionError('Hydra composed every group option for --help')\n"
        "Hydra.format_config_groups = slow\n"
        "sys.argv = ['eval.py', '--help']\n"
        "runpy.run_path('eval.py', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "python eval.py ckpt_path=" in proc.stdout and "method: " not in proc.stdout
    assert "torch loaded: False" in proc.stdout


def test_cfg_job_resolve_prints_the_resolved_config():
    proc = run_script("train.py", ["--cfg", "job", "--resolve"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "${" not in proc.stdout and "output_dir: /" in proc.stdout
