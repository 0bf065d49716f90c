"""results.json: what every run and every failed sweep job leaves in its run directory."""
from __future__ import annotations

import json
from pathlib import Path

from selfsup.report.markdown import score_line


def write_results(results: dict, output_dir: str) -> Path:
    path = Path(output_dir) / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if line := score_line(results):  # the final accuracies, last before the path
        print(line, flush=True)
    print(f"results: {path}", flush=True)
    return path
