"""The report: runs differing only in seed as mean and spread, the accuracy axis fitted to the data."""

from __future__ import annotations

import json


def _fake_run(root, job: int, lr: str, seed: int, knn: float):
    run = root / f"{job}_simclr"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
    (run / "results.json").write_text(
        json.dumps(
            {"method": "simclr", "data": "digits", "backbone": "resnet18", "epochs": 1, "seed": seed, "knn_top1": knn}
        )
    )


def test_report_shows_runs_differing_only_in_seed_as_mean_and_spread(tmp_path):
    from selfsup.report.markdown import markdown
    from selfsup.report.runs import collect, seed_groups

    for job, (lr, seed, knn) in enumerate([("0.1", 1, 0.90), ("0.1", 2, 0.92), ("0.1", 3, 0.94), ("0.3", 1, 0.5)]):
        _fake_run(tmp_path, job, lr, seed, knn)
    runs = collect(tmp_path)
    assert [[r.dir.name for r in g] for g in seed_groups(runs)] == [["0_simclr", "1_simclr", "2_simclr"], ["3_simclr"]]
    report = markdown(tmp_path, runs)
    assert "| optimizer.lr=0.1 | 1, 2, 3 | 0.9200 ± 0.0200 |" in report


def test_report_accuracy_axis_is_fitted_to_the_data():
    from selfsup.report.plot import fitted_range

    low, high = fitted_range([(0.91, 0.91), (0.93, 0.94)])
    assert 0.85 < low < 0.91 and 0.94 < high < 1.0
    assert fitted_range([]) == (0.0, 1.0)
