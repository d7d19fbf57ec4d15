"""benchmarks/rescore_cost.py: every pass it times runs, on small sizes."""

from __future__ import annotations

import sys


def test_rescore_cost_times_each_pass(benchmark_script, monkeypatch, capsys):
    bench = benchmark_script("rescore_cost")
    monkeypatch.setattr(sys, "argv", ["rescore_cost.py", "--gp-candidates", "300", "--mixture-candidates", "200",
                                      "--repeats", "1"])
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and "mixture (5 members)" in lines[2]
    assert all(float(line.split()[-2]) >= 0 for line in lines)
