import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from aexp.bench.cells import CellStore
from aexp.cli.main import _parse_seeds, main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def config(tmp_path, tiny_config):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(tiny_config(name="cli-campaign", stopping={"max_steps": 6})))
    return p


def test_seeds_take_lists_and_inclusive_ranges():
    assert _parse_seeds("0-63") == list(range(64))
    assert _parse_seeds("0,1,5-9") == [0, 1, 5, 6, 7, 8, 9]
    assert _parse_seeds("3, 1,1-2") == [3, 1, 2]  # each seed once, in the order given
    for bad in ("5-3", "a", "1-", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            _parse_seeds(bad)


def test_campaign_killed_at_half_resumes_and_finishes_every_cell_once(config, tmp_path, capsys):
    out = tmp_path / "c1"
    cmd = [sys.executable, "-m", "aexp", "bench", str(config), "--seeds", "0-3", "--policies", "gp-xy,random",
           "--out", str(out), "--workers", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cells = out / "cells.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not cells.exists() or cells.read_bytes().count(b"\n") < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the campaign recorded no 4 cells in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {r.key for r in CellStore(out).read()}
    assert 4 <= len(before) < 8
    # without --resume the folder is refused; with it only the missing cells run
    assert main(["bench", str(config), "--seeds", "0-3", "--policies", "gp-xy,random", "--out", str(out),
                 "--workers", "1", "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["bench", str(config), "--seeds", "0-3", "--policies", "gp-xy,random", "--out", str(out),
                 "--workers", "1", "--quiet", "--resume", "--json", str(tmp_path / "r.json")]) == 0
    assert f"({8 - len(before)} cells run, 0 failed" in capsys.readouterr().out
    records = CellStore(out).read()
    assert len(records) == 8 and len({r.key for r in records}) == 8 and before <= {r.key for r in records}
    res = json.loads((tmp_path / "r.json").read_text())
    by = {(r.policy, r.seed): r.discovery for r in records}
    assert res["policies"]["gp-xy"]["discovery"] == [by[("gp-xy", s)] for s in range(4)]
    meta = json.loads((out / "campaign.json").read_text())
    assert [r["resume"] for r in meta["runs"]] == [False, True]

    assert main(["bench-report", str(out)]) == 0
    md = (out / "report" / "report.md").read_text()
    mean = sum(by[("gp-xy", s)] for s in range(4)) / 4
    assert f"| gp-xy | 4 | 0 | {mean:.3f} |" in md
    assert (out / "report" / "curves.png").exists()


def test_several_configs_write_a_list_of_todays_results(config, tmp_path, tiny_config):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_config(name="other", stopping={"max_steps": 4})))
    out = tmp_path / "r.json"
    assert main(["bench", str(config), str(other), "--seeds", "0", "--policies", "random", "--workers", "1",
                 "--quiet", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["config"] for r in res] == ["cli-campaign", "other"] and [r["budget"] for r in res] == [9, 7]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, tiny_config, capsys):
    p = tmp_path / "gpu.yaml"
    p.write_text(yaml.safe_dump(tiny_config(name="gpu", device="cuda")))
    assert main(["bench", str(p), "--seeds", "0", "--policies", "random", "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "torch sees no CUDA GPU" in err
    assert not (tmp_path / "c").exists()  # nothing started


def test_resume_needs_out(config, capsys):
    assert main(["bench", str(config), "--resume", "--quiet"]) == 2
    assert "--resume needs the --out folder" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_pool_workers_end_when_the_campaign_is_killed(config, tmp_path):
    out = tmp_path / "c2"
    cmd = [sys.executable, "-m", "aexp", "bench", str(config), "--seeds", "0-3", "--policies", "gp-xy,random",
           "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (out / "cells.jsonl").exists() or not (out / "cells.jsonl").read_bytes().count(b"\n"):
            assert proc.poll() is None and time.monotonic() < deadline, "the campaign recorded no cell"
            time.sleep(0.02)
        workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert workers, "no pool worker found"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "pool workers outlived the killed campaign"
