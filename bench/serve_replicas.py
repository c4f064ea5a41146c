"""Serving: one app replica against two behind HAProxy (deploy/haproxy.cfg), on loopback.

    python -m bench.serve_replicas --photos DIR [--requests 480] [--clients 8 32]
    python -m bench.serve_replicas --tiny [--requests 16] [--clients 2 4]    # checks the benchmark itself

The classifier of bench.serve_bench (resnet34 at 256 px, cached in
runs/bench-serve/; ``--tiny``: a tiny untrained one) is served three ways,
with the machine's CPUs split evenly between the replicas' ONNX Runtime threads:

- 1 replica, clients straight to it;
- 1 replica behind HAProxy (both of its server lines point at the one
  replica): what the proxy itself costs;
- 2 replicas behind HAProxy.

For each, N concurrent clients post real photos: requests/s, p50/p99
latency, errors. Clients, HAProxy and the replicas share this machine's
CPUs: on 2 cores two replicas cannot compute more than one, so the ratio
shows the overhead of replication, not its gain, which needs more cores or
more machines. Like bench.serve_bench it waits for a quiet machine first.
Needs haproxy (apt-get install haproxy).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from bbc1k.serving.runtime import cpu_count
from bench import bench_models
from bench.common import load_note, photos_dir
from bench.serve_bench import Server, add_serving_args, app_server, load, wait_for_quiet
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def haproxy(replicas: list[Server], log: Path) -> Iterator[str]:
    """HAProxy with deploy/haproxy.cfg in front of ``replicas`` (one or two); yields its URL once all are UP."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    port, stats = free_port(), free_port()
    second = replicas[-1]
    env = {**os.environ, "LB_PORT": str(port), "STATS_PORT": str(stats),
           "REPLICA1": f"127.0.0.1:{replicas[0].port}", "REPLICA2": f"127.0.0.1:{second.port}"}
    with open(log, "wb") as f:
        proc = subprocess.Popen([binary, "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")], env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _all_up(stats):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"HAProxy did not get its replicas UP: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _all_up(stats_port: int) -> bool:
    try:
        lines = httpx.get(f"http://127.0.0.1:{stats_port}/;csv", timeout=2).text.splitlines()
    except httpx.HTTPError:
        return False
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    servers = [r["status"] for r in rows if r["pxname"] == "replicas" and r["svname"] not in ("BACKEND", "FRONTEND")]
    return bool(servers) and all(s == "UP" for s in servers)


def run_variant(name: str, n_replicas: int, proxied: bool, onnx: str, photos: list[bytes], clients: list[int],
                requests: int, logs: Path) -> dict:
    threads = max(1, cpu_count() // n_replicas)
    replicas = [app_server(["--classifier", onnx, "--threads", str(threads)], logs / f"{name}-{i}.log")
                for i in range(n_replicas)]
    row = {}
    try:
        with (haproxy(replicas, logs / f"{name}-haproxy.log") if proxied else _direct(replicas[0])) as url:
            asyncio.run(load(url, photos, 2, 8))  # warm-up
            for n in clients:
                row[n] = r = asyncio.run(load(url, photos, n, requests))
                print(f"  {name:<24} {n:>3} clients: {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f}  "
                      f"p99 {r['p99']:7.1f} ms  errors {r['errors']}  ({load_note()})", flush=True)
    finally:
        for s in replicas:
            s.stop()
    return row


@contextmanager
def _direct(server: Server) -> Iterator[str]:
    yield server.url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_serving_args(ap)
    a = ap.parse_args()
    if a.tiny:
        facts = bench_models.tiny(Path(tempfile.gettempdir()) / "bbc1k-serve-bench-tiny")
        photos_folder = Path(facts["photos"])
    else:
        photos_folder = photos_dir(a.photos)
        facts = bench_models.classifier(photos_folder)
        bench_models.int8_copy(facts["onnx"], facts)
    photos = [p.read_bytes() for p in sorted(photos_folder.glob("*/*.jpg"))]
    logs = Path(tempfile.mkdtemp(prefix="bbc1k-serve-replicas-logs-"))
    note = wait_for_quiet(a.max_load, a.settle)
    print(f"serving {facts['onnx']} ({a.requests} requests per client count, {len(photos)} photos, "
          f"CPUs {cpu_count()}; {note}; logs in {logs}):", flush=True)
    variants = {"1 replica": (1, False), "1 replica via HAProxy": (1, True), "2 replicas via HAProxy": (2, True)}
    res = {name: run_variant(name, n, proxied, facts["onnx"], photos, a.clients, a.requests, logs)
           for name, (n, proxied) in variants.items()}
    base = res["1 replica"]
    print("\n| setup | clients | req/s | p50 ms | p99 ms | req/s vs 1 replica | p99 vs 1 replica | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in res.items():
        for n in a.clients:
            r, b = row[n], base[n]
            print(f"| {name} | {n} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps'] / b['rps']:.2f}x "
                  f"| {r['p99'] / b['p99']:.2f}x | {r['errors']} |")
    print(f"\n{load_note()}")


if __name__ == "__main__":
    main()
