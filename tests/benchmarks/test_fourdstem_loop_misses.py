"""benchmarks/fourdstem_loop_misses.py: the shape of the 4D-STEM loop's target and how close a run came."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fourdstem-dkl.yaml"


def test_seed_list(benchmark_script):
    bench = benchmark_script("fourdstem_loop_misses")
    assert bench.seed_list("0-3") == [0, 1, 2, 3] and bench.seed_list("3,4,6") == [3, 4, 6]


def test_a_run_that_measured_the_top_set_found_it_all(benchmark_script, tmp_path):
    bench = benchmark_script("fourdstem_loop_misses")
    plain = bench.misses(CONFIG, seed=0, session=None)
    assert plain["top"] == 6  # ceil(1 % of 576)
    assert plain["median"] < plain["threshold"] <= plain["max"]
    assert plain["near"] >= plain["top"] and len(plain["survey_ranks_of_top"]) == 6
    assert 1 <= min(plain["survey_ranks_of_top"]) and max(plain["survey_ranks_of_top"]) <= 576
    # a session that measured the 6 best candidates and one failed step
    lines = [{"index": i, "status": "ok", "phase": "policy"} for i in plain["top_indices"]]
    lines.append({"index": 0, "status": "failed"})
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = bench.misses(CONFIG, seed=0, session=tmp_path)
    assert run["found"] == 6 and run["best_visited_rank"] == 1 and run["best_visited_of_max"] == 1.0
    assert run["chosen_near_top"] == 6 and run["chosen_survey_rank_median"] == np.median(plain["survey_ranks_of_top"])
