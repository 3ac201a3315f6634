"""`jobs/benchmark.py` end to end on its cheapest suite: the figures come out as one Markdown table
headed by the machine, in the file asked for."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_writes_one_table_with_the_machine(tmp_path):
    output = tmp_path / "benchmark.md"
    run = subprocess.run([sys.executable, "jobs/benchmark.py", "index", "--rows", "20000", "--output", str(output)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    table = output.read_text()
    assert table.startswith("Measured ") and "cores" in table and "Ray 2.60.0" in table
    rows = [line for line in table.splitlines() if line.startswith("| index |")]
    assert len(rows) >= 4 and all(line.count("|") == 6 for line in rows)
    assert "chunked / baseline" in table
