"""Round trips over the instrument link on loopback, and what the network adds to a step.

1. Transport: a server process holding fixed arrays (no instrument work) answers ``measure`` with a
   2,048-channel float64 spectrum and ``survey`` with a 512 x 512 float32 image, through the real
   server, codec and lazy-pirate client. Median and p99 latency, MB/s of payload.
2. Overhead per step: the plasmonic simulator (2,048 channels) measured in-process and through
   ``aexp serve`` in another process, interleaved call by call so that machine noise hits both
   alike; overhead = median(network) - median(in-process). ``link_median_ms`` is the median of
   (round trip - the server's own wall time in the instrument) per call: the link's share alone,
   less sensitive to the server process being slowed by other jobs. Each call has a fresh command id, so
   every one measures. Three servers: no executed-command log, a log flushed per command
   (survives a server crash), a log fsync'ed per command (survives power loss; the default).

    python benchmarks/zmq_latency.py --repeats 300 --json zmq_latency.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aexp.instrument import check_position
from aexp.link.serve import ServerConfig, run_server
from aexp.types import Bounds, InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey

CHANNELS = 2048
IMAGE = 512
SIM = {"survey_pixels": 128, "n_channels": CHANNELS, "n_particles": 8}


class FixedArrays:
    """An instrument that does no work: the same spectrum and image every time."""

    bounds = Bounds(0.0, 1e-6, 0.0, 1e-6)
    axis = SpectrumAxis("energy_loss", "eV", 0.2, 5.0, CHANNELS)

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.spectrum = rng.poisson(100.0, CHANNELS).astype(np.float64)
        self.image = rng.random((1, IMAGE, IMAGE), dtype=np.float32)

    def describe(self) -> InstrumentDescription:
        return InstrumentDescription("fixed", self.bounds, (1, IMAGE, IMAGE), ("haadf",), self.axis)

    def survey(self) -> Survey:
        return Survey(self.image, PixelTransform.square(1e-9), ("haadf",))

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        check_position(self.bounds, position)
        return Measurement(self.spectrum, self.axis, tuple(position))


def start_server(argv: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving on"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def stats(times_s: list[float], payload_bytes: int) -> dict[str, float]:
    t = np.asarray(times_s)
    med = float(np.median(t))
    return {"median_ms": med * 1e3, "p99_ms": float(np.percentile(t, 99)) * 1e3,
            "mb_per_s": payload_bytes / med / 1e6, "n": len(t)}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def transport(repeats: int) -> dict[str, dict[str, float]]:
    from drivers.zmq import ZmqInstrument

    proc, address = start_server([sys.executable, __file__, "--serve-fixed"])
    try:
        with ZmqInstrument(address=address, timeout_s=10.0) as inst:
            inst.survey()  # connect, handshake, lease
            xy = (5e-7, 5e-7)
            measure = timed(lambda i: inst.measure(xy, command_id=f"t{i}"), repeats)
            survey = timed(lambda i: inst.survey(), max(20, repeats // 3))
            ping = timed(lambda i: inst.ping(), repeats)
    finally:
        proc.terminate()
        proc.wait()
    return {
        f"measure_{CHANNELS}ch_f64": stats(measure, CHANNELS * 8),
        f"survey_{IMAGE}x{IMAGE}_f32": stats(survey, IMAGE * IMAGE * 4),
        "ping": stats(ping, 0),
    }


def overhead(repeats: int, executed_log: str) -> dict[str, float]:
    from drivers.zmq import ZmqInstrument
    from simulators.plasmonic import PlasmonicSimulator

    tmp = tempfile.TemporaryDirectory()
    argv = [sys.executable, "-m", "aexp.cli.main", "serve", "--sim", "plasmonic", "--bind", "tcp://127.0.0.1:*"]
    argv += [f"-o{k}={v}" for k, v in SIM.items()]
    if executed_log != "none":
        argv += ["--executed-log", str(Path(tmp.name) / "executed.jsonl")]
    else:  # the log is on by default since the link hardening; "none" measures the server without it
        argv += ["--no-executed-log"]
    if executed_log == "flush":
        argv += ["--log-no-fsync"]
    proc, address = start_server(argv)
    local = PlasmonicSimulator(seed=0, **SIM)
    rng = np.random.default_rng(1)
    b = local.bounds
    positions = rng.uniform([b.xmin, b.ymin], [b.xmax, b.ymax], size=(repeats, 2))
    t_local, t_net, t_server = [], [], []
    try:
        with ZmqInstrument(address=address, timeout_s=10.0) as inst:
            inst.survey()
            for i, xy in enumerate(positions):  # interleaved: noise hits both alike
                t0 = time.perf_counter()
                local.measure(tuple(xy), command_id=f"l{i}")
                t1 = time.perf_counter()
                m = inst.measure(tuple(xy), command_id=f"n{i}")
                t_net.append(time.perf_counter() - t1)
                t_server.append(m.metadata["server_wall_s"])
                t_local.append(t1 - t0)
    finally:
        proc.terminate()
        proc.wait()
        tmp.cleanup()
    med_local, med_net = float(np.median(t_local)), float(np.median(t_net))
    diffs = np.asarray(t_net) - np.asarray(t_local)
    return {"in_process_median_ms": med_local * 1e3, "network_median_ms": med_net * 1e3,
            "overhead_median_ms": (med_net - med_local) * 1e3,
            "overhead_paired_median_ms": float(np.median(diffs)) * 1e3,
            "server_instrument_median_ms": float(np.median(t_server)) * 1e3,
            "link_median_ms": float(np.median(np.asarray(t_net) - np.asarray(t_server))) * 1e3,
            "ratio_network_to_in_process": med_net / med_local, "n": repeats}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--serve-fixed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_fixed:
        run_server(FixedArrays(), ServerConfig(bind="tcp://127.0.0.1:*"), announce=lambda s: print(s, flush=True))
        return 0
    result = {
        "transport": transport(args.repeats),
        "overhead_per_step": overhead(args.repeats, executed_log="none"),
        "overhead_per_step_log_flushed": overhead(args.repeats, executed_log="flush"),
        "overhead_per_step_log_fsynced": overhead(args.repeats, executed_log="fsync"),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
