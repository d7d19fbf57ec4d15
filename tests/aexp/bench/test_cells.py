import json

import numpy as np
import pytest
import torch

from aexp.bench import run_bench
from aexp.bench.cells import Cell, CellStore, _cache, config_digest, make_cells, run_cell
from aexp.config import parse_config
from aexp.session.store import SessionError

POLICIES = ["random", "gp-xy", "dkl-patch"]


@pytest.fixture
def cfg(tiny_config):
    return parse_config(tiny_config(name="cells", stopping={"max_steps": 8}))


def test_config_digest_ignores_key_order_and_sees_values():
    a = {"name": "x", "policy": {"beta": 4.0, "kind": "dkl"}}
    b = {"policy": {"kind": "dkl", "beta": 4.0}, "name": "x"}
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest({**a, "policy": {"beta": 4.5, "kind": "dkl"}})
    assert len(config_digest(a)) == 64


def test_make_cells_is_config_then_seed_then_policy(cfg):
    cells = make_cells([cfg.to_dict()], [3, 1], ["random", "gp-xy"])
    assert [(c.seed, c.policy) for c in cells] == [(3, "random"), (3, "gp-xy"), (1, "random"), (1, "gp-xy")]
    assert cells[0].key == (config_digest(cfg.to_dict()), 3, "random")


def test_a_cell_alone_gives_what_run_bench_gives(cfg):
    bench = run_bench(cfg, [0, 1], policies=POLICIES, top_fraction=0.05, progress=False, log=lambda s: None)
    for i, seed in enumerate([0, 1]):
        for policy in POLICIES:
            _cache.clear()  # from scratch, as on a worker that never saw the seed
            rec = run_cell(Cell(cfg.to_dict(), seed, policy, top_fraction=0.05))
            assert rec["status"] == "ok", rec["error"]
            assert rec["discovery"] == bench["policies"][policy]["discovery"][i]
            assert rec["n_candidates"] == bench["n_candidates"] == 256
            assert rec["budget"] == 11 and len(rec["indices"]) == 11 and len(rec["discovery_curve"]) == 11
            # the curve counts the top candidates found after each measurement
            assert rec["discovery_curve"][-1] == rec["discovery"] == rec["hits"] / rec["n_top"]
            assert rec["n_top"] == 13  # ceil(0.05 * 256)
            assert np.all(np.diff(rec["discovery_curve"]) >= 0)
            assert len(rec["decision_times_s"]) == 11 - 3  # the policy's steps
            assert rec["torch"]["num_threads"] == 1 and rec["torch"]["device"] == "cpu"


def test_the_process_cache_changes_time_not_results(cfg):
    _cache.clear()
    fresh = run_cell(Cell(cfg.to_dict(), 2, "dkl-patch"))
    run_cell(Cell(cfg.to_dict(), 2, "random"))  # the seed is now prepared in this process
    cached = run_cell(Cell(cfg.to_dict(), 2, "dkl-patch"))
    assert fresh["prepared_here"] and not cached["prepared_here"]
    out = {k: fresh[k] for k in ("discovery", "indices", "discovery_curve", "best_target")}
    assert out == {k: cached[k] for k in out}


def test_a_cell_that_raises_is_a_failed_record(tiny_config):
    bad = parse_config(tiny_config(name="bad", instrument={"driver": "tem9000", "options": {}}))
    rec = run_cell(Cell(bad.to_dict(), 0, "random"))
    assert rec["status"] == "failed" and rec["discovery"] is None
    assert "tem9000" in rec["error"] and "Traceback" in rec["traceback"]
    json.dumps(rec, allow_nan=False)  # still a valid line of cells.jsonl


def _record(seed, policy, status="ok", discovery=0.5):
    return {"config": "c" * 64, "config_name": "x", "seed": seed, "policy": policy, "status": status,
            "top_fraction": 0.01, "discovery": discovery if status == "ok" else None}


def test_store_appends_lines_and_the_last_record_of_a_cell_counts(tmp_path):
    store = CellStore(tmp_path / "c").open()
    store.append(_record(0, "random", "failed"))
    store.append(_record(1, "random"))
    store.append(_record(0, "random", discovery=0.25))  # the retry of the failed cell
    assert len(store.path.read_text().splitlines()) == 3
    latest = store.latest()
    assert latest[("c" * 64, 0, "random")].discovery == 0.25
    assert store.done() == {("c" * 64, 0, "random"), ("c" * 64, 1, "random")}


def test_store_tolerates_a_torn_last_line_and_sets_it_aside(tmp_path):
    store = CellStore(tmp_path).open()
    store.append(_record(0, "random"))
    with open(store.path, "ab") as fh:
        fh.write(b'{"config": "cc", "se')  # killed mid-write
    reader = CellStore(tmp_path)
    assert [r.seed for r in reader.read()] == [0]
    assert "torn last record" in reader.dropped[0]
    again = CellStore(tmp_path).open()  # opening for append moves the fragment aside
    again.append(_record(1, "random"))
    assert [r.seed for r in CellStore(tmp_path).read()] == [0, 1]
    aside = (tmp_path / "recovered-0.bin").read_bytes()
    assert aside.endswith(b'{"config": "cc", "se') and "recovered-0.bin" in again.dropped[0]


def test_store_names_the_line_of_a_malformed_record(tmp_path):
    (tmp_path / "cells.jsonl").write_text(json.dumps(_record(0, "random")) + "\nnot json\n")
    with pytest.raises(SessionError, match=r"cells.jsonl: line 2 is not a valid cell record"):
        CellStore(tmp_path).read()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_cell_runs_its_embedder_and_surrogate_on_the_gpu(tiny_config):
    cfg = parse_config(tiny_config(name="gpu", device="cuda", embedder={"kind": "rvae", "epochs": 2},
                                   stopping={"max_steps": 6}))
    cpu = parse_config({**cfg.to_dict(), "device": "cpu"})
    for policy in ("dkl-rvae", "dkl-patch", "random"):
        rec = run_cell(Cell(cfg.to_dict(), 0, policy))
        assert rec["status"] == "ok", rec["error"]
        assert rec["torch"]["device"] == "cuda" and len(rec["indices"]) == 9
    # the random policy never touches the device: the same picks as on the CPU
    assert run_cell(Cell(cpu.to_dict(), 0, "random"))["indices"] == rec["indices"]
