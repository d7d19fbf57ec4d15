"""Fuzz campaign against a real `aexp serve` process: every message must get an answer, and a
well-formed ``ping`` must be answered after each one.

Message kinds (drawn in turn, seeded): headers of nested ``[``/``{`` (up to 30,000 deep), the same
nesting inside ``params``, integers of up to 6,000 digits in the header, a shape and a coordinate,
declared shapes with huge or zero dimensions (``[0, 10**30]``, ``[0, 2**62, 2**62]``, up to 12
dimensions), dtypes inside and outside the allow-list, frame counts and sizes that disagree with the
header, NaN/Infinity, random bytes, and well-formed requests (ping, describe, status, lease, measure)
in between.

Reports server exits, hangs (no answer to the message or to the ping within the deadline), the
error types seen, and the server's resident memory (VmRSS) after a warm-up and at the end.

    OMP_NUM_THREADS=1 python -m benchmarks.link_fuzz --messages 3000
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from aexp.link.wire import decode, encode_request

KINDS = ("nested_header", "nested_params", "big_int", "shape", "dtype", "frames", "constant", "bytes", "valid")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def raw_header(**parts: bytes) -> bytes:
    fields = {"v": b"1", "id": b'"f"', "method": b'"ping"', "params": b"{}", "arrays": b"[]", **parts}
    return b"{" + b", ".join(json.dumps(k).encode() + b": " + v for k, v in fields.items()) + b"}"


def nested(rng: np.random.Generator, limit: int) -> bytes:
    depth = int(rng.integers(0, limit))
    if rng.random() < 0.5:
        return b"[" * depth + b"1" + b"]" * depth
    depth //= 6  # '{"a": ' is six bytes: stay under the 64 KiB header limit
    return b'{"a": ' * depth + b"1" + b"}" * depth


def message(kind: str, rng: np.random.Generator, token: str) -> list[bytes]:
    method = rng.choice([b'"ping"', b'"measure"', b'"lease"', b'"status"', b'"survey"', b'"nope"'])
    if kind == "nested_header":
        return [nested(rng, 30000)]
    if kind == "nested_params":
        return [raw_header(method=method, params=b'{"position": ' + nested(rng, 30000) + b"}")]
    if kind == "big_int":
        digits = b"9" * int(rng.integers(1, 6000))
        where = rng.integers(3)
        if where == 0:
            return [raw_header(v=digits)]
        if where == 1:
            return [raw_header(arrays=b'[{"name": "a", "dtype": "<f8", "shape": [0, ' + digits + b"]}]"), b""]
        return [raw_header(method=b'"measure"', params=b'{"position": [' + digits + b', 1], "command_id": "c"}')]
    if kind == "shape":
        pool = [0, 1, 3, 2**31, 2**62, 2**63, 2**64, 10**30, -1]
        shape = [int(rng.choice(pool)) if rng.random() < 0.7 else int(rng.integers(0, 5)) for _ in range(rng.integers(0, 13))]
        spec = json.dumps([{"name": "a", "dtype": "<f8", "shape": shape}]).encode()
        return [raw_header(arrays=spec), b"\0" * int(rng.choice([0, 8, 24]))]
    if kind == "dtype":
        dt = str(rng.choice(["<f8", "|u1", "<c16", "|O", "|V8", ">f8", "<U4", "<M8[s]", "", "f8", "object"]))
        spec = json.dumps([{"name": "a", "dtype": dt, "shape": [2]}]).encode()
        return [raw_header(arrays=spec), b"\0" * 16]
    if kind == "frames":
        n_declared, sizes = int(rng.integers(0, 18)), [int(s) for s in rng.choice([0, 1, 8, 4096], size=rng.integers(0, 18))]
        spec = json.dumps([{"name": f"a{i}", "dtype": "|u1", "shape": [8]} for i in range(n_declared)]).encode()
        return [raw_header(arrays=spec), *(b"\0" * s for s in sizes)]
    if kind == "constant":
        c = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0"])
        return [raw_header(method=b'"measure"', params=b'{"position": [' + c + b', 0], "command_id": "c", "lease": "x"}')]
    if kind == "bytes":
        return [rng.bytes(int(rng.integers(0, 200))) for _ in range(rng.integers(1, 4))]
    what = rng.integers(4)
    if what == 0:
        return encode_request("ok", "describe", {})
    if what == 1:
        return encode_request("ok", "lease", {"client": "fuzz", "token": token})
    if what == 2:
        return encode_request("ok", "status", {"command_id": f"c{rng.integers(50)}"})
    x = float(rng.uniform(0, 30e-9))
    return encode_request("ok", "measure", {"position": [x, x], "command_id": f"c{rng.integers(50)}", "lease": token})


class Client:
    """A REQ socket rebuilt after a missed deadline (the lazy pirate pattern of the pyzmq guide)."""

    def __init__(self, address: str, deadline_ms: int) -> None:
        self.ctx, self.address, self.deadline_ms = zmq.Context(), address, deadline_ms
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(self.address)
        return sock

    def ask(self, frames: list[Any]) -> Any:
        self.sock.send_multipart(frames)
        if not self.sock.poll(self.deadline_ms):
            self.sock.close(linger=0)
            self.sock = self._connect()
            return None
        return decode(self.sock.recv_multipart(copy=False))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline-ms", type=int, default=5000)
    args = parser.parse_args()

    state = tempfile.TemporaryDirectory()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", "tcp://127.0.0.1:*",
         "-o", "survey_pixels=64", "-o", "n_particles=2", "--state-dir", state.name],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    address = proc.stdout.readline().split()[-1]
    client = Client(address, args.deadline_ms)
    rng = np.random.default_rng(args.seed)
    token = "fuzz-" + "t" * 40
    kinds: collections.Counter[str] = collections.Counter()
    answers: collections.Counter[str] = collections.Counter()
    hangs, exits, rss_warm, t0 = 0, 0, -1, time.perf_counter()
    try:
        for i in range(args.messages):
            if i == 200:
                rss_warm = rss_kib(proc.pid)
            kind = KINDS[i % len(KINDS)]
            kinds[kind] += 1
            reply = client.ask(message(kind, rng, token))
            answers["no reply" if reply is None else (reply.error or {}).get("type", "result")] += 1
            pong = client.ask(encode_request("p", "ping", {}))
            if reply is None or pong is None or pong.result != {"pong": True}:
                hangs += 1
            if proc.poll() is not None:
                exits += 1
                break
        rss_end = rss_kib(proc.pid) if proc.poll() is None else -1
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        state.cleanup()
    print(json.dumps({
        "messages": sum(kinds.values()), "per_kind": dict(kinds), "answers": dict(answers),
        "server_exits": exits, "hangs": hangs, "rss_kib_after_200": rss_warm, "rss_kib_end": rss_end,
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
