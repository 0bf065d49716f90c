"""Local comparison of runs, no W&B needed: every results.json below a directory (an outputs dir,
a multirun/sweep dir, a single run) and its CSV log become report.md (a table, failed jobs listed,
Optuna's best parameters when present) and report.png (accuracy bars per run, kNN top-1 over
epochs per run). `python scripts/compare.py <dir>`, `make report DIR=<dir>`, and automatically at
the end of every multirun (`SweepReport`, a Hydra callback in conf/hydra/default.yaml).

`runs.py` finds the runs and reads what they left (results.json, overrides, the kNN curve);
`markdown.py` and `plot.py` render them; `write.py` writes both files and holds the Hydra callback."""
