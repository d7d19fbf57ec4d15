"""The live page: loopback by default, a token for anything else, commands checked as `aexp control`
checks them, and in a real browser (Debian's chromium) a step appears without reload and a click on
the survey becomes an operator step."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from aexp.cli.main import main
from aexp.config import parse_config
from aexp.errors import UsageError
from aexp.instrument import load_instrument
from aexp.live.app import LiveServer, check_bind, is_loopback, make_app
from aexp.loop import run_experiment
from aexp.session.store import SessionReader

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_config):
    cfg = parse_config(tiny_config(stopping={"max_steps": 2}))
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=0)
    folder, _ = run_experiment(cfg, inst, tmp_path_factory.mktemp("done") / "s", seed=0, progress=False)
    return folder


def test_only_loopback_without_a_token(finished, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(UsageError, match="--host 0.0.0.0 is reachable from other machines"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UsageError, match="give --token"):
        LiveServer(finished, host="0.0.0.0")
    check_bind("0.0.0.0", "s3cret")  # allowed with a token
    assert main(["watch", str(finished), "--host", "0.0.0.0"]) == 2
    assert "give --token" in capsys.readouterr().err


def _refused(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_the_page_is_served_by_a_child_that_ends_with_its_run(finished):
    import urllib.request

    server = LiveServer(finished, token="s3cret").start()
    assert server.process is not None and server.process.pid != os.getpid()
    with urllib.request.urlopen(server.url.replace("/?", "/state?"), timeout=10) as answer:
        assert json.load(answer)["ready"]
    server.stop()
    assert _refused(server.port)
    # a run killed with -9 takes its page with it (the child's input closes)
    script = ("import sys, time; from aexp.live.app import LiveServer; s = LiveServer(sys.argv[1]).start(); "
              "print(s.port, flush=True); time.sleep(120)")
    run = subprocess.Popen([sys.executable, "-c", script, str(finished)], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        port = int(run.stdout.readline())
        assert not _refused(port)
    finally:
        run.kill()
        run.wait(timeout=10)
    deadline = time.monotonic() + 20
    while not _refused(port):
        assert time.monotonic() < deadline, "the page outlived its run"
        time.sleep(0.1)


def test_a_port_in_use_is_a_clear_error(finished):
    server = LiveServer(finished).start()
    try:
        with pytest.raises(UsageError, match=f"could not start on 127.0.0.1:{server.port}: .*in use"):
            LiveServer(finished, port=server.port).start()
    finally:
        server.stop()


def test_a_token_guards_every_route(finished):
    from starlette.testclient import TestClient

    client = TestClient(make_app(finished, token="s3cret"))
    assert client.get("/state").status_code == 403
    assert client.post("/control", json={"what": "pause"}).status_code == 403
    state = client.get("/state?token=s3cret").json()
    assert state["ready"] and len(state["steps"]) == 5 and state["budget"] == 5
    assert len(state["candidates"]) == len(state["positions"]) == 256
    # a twin knows its truth: the discovery curve of the true top 1 % (3 candidates), never falling
    curve = state["discovery"]
    assert len(curve) == 5 and all(0 <= v <= 1 for v in curve) and curve == sorted(curve)
    assert client.get("/", headers={"X-Aexp-Token": "s3cret"}).status_code == 200


def test_the_page_refuses_what_aexp_control_refuses(finished):
    from starlette.testclient import TestClient

    client = TestClient(make_app(finished))
    json_type = {"Content-Type": "application/json"}
    r = client.post("/control", content=b"not json", headers=json_type)
    assert r.status_code == 400
    # what a foreign web page could send: a simple form/text POST, or a JSON one from another origin
    assert client.post("/control", content=b'{"what": "stop"}', headers={"Content-Type": "text/plain"}).status_code == 415
    r = client.post("/control", json={"what": "stop"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/control", json={"what": "goto", "index": 3})
    assert r.status_code == 400 and "it has ended (completed)" in r.json()["error"]
    r = client.post("/control", content=b"x" * 5000, headers=json_type)
    assert r.status_code == 413
    assert not (finished / "control.jsonl").exists()
    png = client.get("/survey.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_in_a_browser_a_step_appears_and_a_click_sends_the_probe_there(tmp_path, tiny_config):
    from playwright.sync_api import sync_playwright

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(stopping={"max_steps": 200})))
    folder = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "aexp", "run", str(config), "--out", str(folder), "--live",
                            "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           cwd=ROOT)
    try:
        url = run.stdout.readline().split("live page: ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), url
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.goto(url, timeout=30_000)
            page.wait_for_function("Number(document.getElementById('nsteps').textContent) >= 1", timeout=60_000)
            shown = int(page.text_content("#nsteps"))
            page.wait_for_function("getComputedStyle(document.getElementById('discovery-panel')).display === 'block'",
                                   timeout=30_000)
            # a step appears without a reload
            page.wait_for_function(f"Number(document.getElementById('nsteps').textContent) > {shown}",
                                   timeout=60_000)
            page.click("#pause")
            page.wait_for_function("document.getElementById('state').textContent === 'paused'", timeout=60_000)
            reader = SessionReader(folder)
            measured = {s.index for s in reader.steps}
            pixels = reader.array("pixels")
            target = next(i for i in range(len(pixels) - 1, -1, -1) if i not in measured)
            box = page.locator("#overlay").bounding_box()
            scale = box["width"] / 32
            page.mouse.click(box["x"] + pixels[target, 1] * scale, box["y"] + pixels[target, 0] * scale)
            page.wait_for_function("document.getElementById('message').textContent === 'sent: goto'",
                                   timeout=30_000)
            page.click("#resume")
            deadline = time.monotonic() + 60
            while not any(s.phase == "operator" for s in SessionReader(folder).steps):
                assert time.monotonic() < deadline, "no operator step was recorded"
                time.sleep(0.1)
            page.wait_for_function("document.getElementById('log').textContent.includes('goto applied')",
                                   timeout=30_000)
            page.click("#stop")
            browser.close()
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
    steps = SessionReader(folder).steps
    operator = [s for s in steps if s.phase == "operator"]
    assert [s.index for s in operator] == [target]
    actions = [json.loads(line) for line in (folder / "actions.jsonl").read_text().splitlines()]
    assert {(a["who"], a["what"], a["status"]) for a in actions} >= {
        ("operator", "pause", "applied"), ("operator", "goto", "applied"), ("operator", "stop", "applied")}
    assert json.loads((folder / "summary.json").read_text())["stop_reason"] == "operator"
    assert len(steps) < 203 and np.isfinite(steps[-1].best_so_far)
