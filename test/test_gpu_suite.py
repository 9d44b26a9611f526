"""The GPU benchmark suite's CPU dry run: every benchmark it calls still runs and prints its table."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_dry_run_writes_every_table(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "suite.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(["bash", str(ROOT / "test/benchmarks/gpu_suite.sh"), "--dry-run", "--out", str(out)],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    text = out.read_text()
    summary = text.split("\n### ")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "| ok |" in line]
    assert len(rows) == 5, summary
    for heading in ("| model | params (M)", "| variant | ms | peak MiB |", "| head + loss", "| method | fit s",
                    "| encoder | eager ms/step"):
        assert heading in text, heading
