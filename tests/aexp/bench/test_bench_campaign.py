import json
import multiprocessing
import os
import signal
import threading
import time

import pytest

from aexp.bench.campaign import CampaignError, bench_json, open_campaign, run_cells
from aexp.bench.cells import CellResult, CellStore, make_cells
from aexp.bench.executors import ExecutorSpec, SerialExecutor
from aexp.config import parse_config

POLICIES = ["random", "gp-xy", "dkl-patch"]


@pytest.fixture(scope="module")
def cells(tiny_config):
    cfg = parse_config(tiny_config(name="campaign", stopping={"max_steps": 8}))
    return make_cells([cfg.to_dict()], [0, 1], POLICIES, top_fraction=0.05)


def _outcomes(records):
    return {(r["seed"], r["policy"]): CellResult.from_dict(r).outcome() for r in records}


@pytest.fixture(scope="module")
def serial(cells, tmp_path_factory):
    store = CellStore(tmp_path_factory.mktemp("serial")).open()
    records = run_cells(cells, ExecutorSpec(workers=1), store)
    assert [r["status"] for r in records] == ["ok"] * 6
    assert [(r["seed"], r["policy"]) for r in records] == [(c.seed, c.policy) for c in cells]
    assert len(store.read()) == 6
    return records


def test_serial_executor_returns_finished_futures():
    with SerialExecutor() as ex:
        assert ex.submit(pow, 2, 10).result() == 1024
        assert isinstance(ex.submit(int, "x").exception(), ValueError)


def _step_log():
    heard = {}

    def on_step(key, done, budget):
        heard.setdefault(key, []).append((done, budget))

    return heard, on_step


def test_process_pool_writes_exactly_the_serial_cell_results(cells, serial, tmp_path):
    store = CellStore(tmp_path / "pool").open()
    heard, on_step = _step_log()
    records = run_cells(cells, ExecutorSpec(workers=2), store, on_step=on_step)
    assert _outcomes(records) == _outcomes(serial)  # hearing the steps changes no result
    budget = records[0]["budget"]
    assert heard == {c.key: [(k, budget) for k in range(1, budget + 1)] for c in cells}  # from the workers
    assert {r["pid"] for r in records}.isdisjoint({os.getpid()})  # they ran in the worker processes
    assert {r["torch"]["num_threads"] for r in records} == {1}


def test_cells_run_here_report_each_step_and_stop_when_the_campaign_ends(cells, serial, tmp_path):
    from aexp.bench import cells as cell_module

    heard, on_step = _step_log()
    one = [c for c in cells if c.policy == "random"][:1]
    records = run_cells(one, ExecutorSpec(workers=1), None, on_step=on_step)
    assert _outcomes(records) == {k: v for k, v in _outcomes(serial).items() if k == (one[0].seed, "random")}
    assert heard == {one[0].key: [(k, records[0]["budget"]) for k in range(1, records[0]["budget"] + 1)]}
    assert cell_module._step_sink is None  # nothing reports into a finished campaign's display


def test_dask_local_cluster_writes_exactly_the_serial_cell_results(cells, serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    # in-process workers (no sockets): two threads share this process, and the cells still agree
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        store = CellStore(tmp_path / "dask").open()
        records = run_cells(cells, ExecutorSpec(scheduler=cluster.scheduler_address), store)
    assert _outcomes(records) == _outcomes(serial)
    assert len(store.read()) == 6


def test_killing_a_worker_process_mid_campaign_still_finishes_every_cell_once(cells, serial, tmp_path):
    store = CellStore(tmp_path / "killed").open()
    spec = ExecutorSpec(workers=2)
    done: list = []
    runner = threading.Thread(target=lambda: done.append(run_cells(cells, spec, store)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while not store.path.exists() or not store.path.read_bytes().count(b"\n"):
        assert time.monotonic() < deadline, "no cell finished in 120 s"
        time.sleep(0.05)
    victims = multiprocessing.active_children()
    assert victims, "the pool's worker processes should be children of this process"
    os.kill(victims[0].pid, signal.SIGKILL)
    runner.join(timeout=180)
    assert not runner.is_alive()
    records = store.read()
    assert len(records) == 6 and len({r.key for r in records}) == 6  # every cell, once
    assert all(r.status == "ok" for r in records)
    assert {(r.seed, r.policy): r.outcome() for r in records} == _outcomes(serial)
    assert {r.pid for r in records} - {v.pid for v in victims}, "the rest ran on a rebuilt pool"


@pytest.mark.slow
def test_killing_a_dask_worker_mid_campaign_still_finishes_every_cell_once(cells, serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        store = CellStore(tmp_path / "dask-killed").open()
        done: list = []
        runner = threading.Thread(target=lambda: done.append(
            run_cells(cells, ExecutorSpec(scheduler=cluster.scheduler_address), store)), daemon=True)
        runner.start()
        deadline = time.monotonic() + 120
        while not store.path.exists() or not store.path.read_bytes().count(b"\n"):
            assert time.monotonic() < deadline, "no cell finished in 120 s"
            time.sleep(0.05)
        pids = client.run(os.getpid)  # {worker address: pid}
        os.kill(next(iter(pids.values())), signal.SIGKILL)  # its nanny starts a new one
        runner.join(timeout=240)
        assert not runner.is_alive()
    records = store.read()
    assert len(records) == 6 and len({r.key for r in records}) == 6
    assert {(r.seed, r.policy): r.outcome() for r in records} == _outcomes(serial)


def test_resume_runs_only_the_missing_cells(cells, serial, tmp_path):
    out = tmp_path / "c1"
    store, todo = open_campaign(out, cells, resume=False, executor="serial")
    assert todo == cells
    for record in serial[:4]:
        store.append(record)
    with open(store.path, "ab") as fh:
        fh.write(b'{"config": "torn')  # the campaign was killed while writing the fifth
    with pytest.raises(CampaignError, match="pass --resume"):
        open_campaign(out, cells, resume=False, executor="serial")
    store, todo = open_campaign(out, cells, resume=True, executor="serial")
    assert todo == cells[4:]
    ran = run_cells(todo, ExecutorSpec(workers=1), store)
    assert [(r["seed"], r["policy"]) for r in ran] == [(c.seed, c.policy) for c in cells[4:]]
    records = CellStore(out).read()
    assert len(records) == 6 and {r.key for r in records} == {c.key for c in cells}
    assert (out / "recovered-0.bin").exists()
    meta = json.loads((out / "campaign.json").read_text())
    assert [r["to_run"] for r in meta["runs"]] == [6, 2] and meta["runs"][1]["resume"] is True


def test_a_cell_that_raises_is_recorded_and_the_rest_finish(tiny_config, cells, tmp_path):
    bad = parse_config(tiny_config(name="bad", instrument={"driver": "tem9000", "options": {}}))
    mixed = make_cells([bad.to_dict()], [0], ["random"]) + cells[:2]
    store = CellStore(tmp_path / "mixed").open()
    records = run_cells(mixed, ExecutorSpec(workers=1), store)
    assert [r["status"] for r in records] == ["failed", "ok", "ok"]
    assert "no instrument driver named 'tem9000'" in records[0]["error"]
    assert [r.status for r in store.read()] == ["failed", "ok", "ok"]
    # a later --resume runs the failed cell again and nothing else
    _, todo = open_campaign(tmp_path / "mixed", mixed, resume=True, executor="serial")
    assert todo == mixed[:1]


def test_bench_json_is_todays_format_with_null_for_failed_cells(cells, serial):
    records = [dict(r) for r in serial]
    records[0] = {**records[0], "status": "failed", "discovery": None, "decision_s": None}
    (res,) = bench_json(records, cells)
    assert set(res) == {"budget", "n_candidates", "top_fraction", "seeds", "config", "policies"}
    assert res["budget"] == 11 and res["n_candidates"] == 256 and res["seeds"] == [0, 1]
    assert res["config"] == "campaign" and list(res["policies"]) == POLICIES
    assert res["policies"]["random"]["discovery"][0] is None
    assert res["policies"]["gp-xy"]["discovery"] == [serial[1]["discovery"], serial[4]["discovery"]]
    assert res["policies"]["gp-xy"]["decision_s"] == [serial[1]["decision_s"], serial[4]["decision_s"]]


def test_progress_line_shows_each_running_cells_steps_and_drops_finished_ones():
    from aexp.bench.campaign import Progress

    a, b = ("d", 0, "dkl-patch"), ("d", 1, "random")
    progress = Progress(2, enabled=True, names={a: "campaign/seed 0/dkl-patch", b: "campaign/seed 1/random"})
    progress.step(a, 3, 11)
    progress.step(b, 1, 11)
    assert progress.status.desc == "steps: campaign/seed 0/dkl-patch 3/11 · campaign/seed 1/random 1/11"
    progress({"config": "d", "seed": 0, "policy": "dkl-patch", "status": "ok", "discovery": 0.5})
    progress.step(a, 11, 11)  # a step heard after its cell's record: the cell stays finished
    assert progress.status.desc == "steps: campaign/seed 1/random 1/11"
    progress.close()
    quiet = Progress(1, enabled=True)
    assert quiet.status.disable  # no names (not a terminal): no step line
    quiet.close()
