"""Serving benchmark: the 2020 design against this app, side by side, in one run.

    python -m bench.serve_bench --photos DIR [--requests 240] [--clients 8 32]
    python -m bench.serve_bench --photos DIR --startup [DIR ...] [--repeats 5]   # cold start and memory only

The same resnet34 classifier at 256 px (trained briefly from scratch on the
real photos of ``--photos`` or $BBC1K_PHOTOS, cached in runs/bench-serve/; see
bench.bench_models) is served on loopback by ``python -m app`` three ways:

- 2020 design: the fastai ``.pkl`` through ``load_learner``, ``learn.predict``
  on one image per request (``--allow-pickle``);
- ONNX: the ``.onnx`` export through ONNX Runtime with micro-batching;
- ONNX int8: its statically quantised copy, same server.

For each: cold start (process start to /readyz 200), then N concurrent
clients posting real photos for a fixed number of requests: requests/s,
p50/p95/p99 latency, errors, peak RSS of the server process (VmHWM). Then the
accuracy of each variant on the held-out photos, and the RSS of a server with
three full-size models (classifier, resnet34 classify+detect, resnet34
U-Net). Prints figures; asserts nothing. Client and server share the CPUs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bbc1k.serving.runtime import cpu_count
from bench import bench_models
from bench.common import add_photos_arg, load_note, photos_dir

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.started = time.perf_counter()
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
        self.cold_start_s = self._wait_ready()

    def _wait_ready(self, timeout: float = 300) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError("server not ready")

    def _status_mb(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def load(url: str, photos: list[bytes], clients: int, requests: int, tasks: str) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/analyze?tasks={tasks}",
                                      files={"file": ("photo.jpg", photos[i % len(photos)], "image/jpeg")})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"rps": requests / elapsed, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "errors": errors, "seconds": elapsed}


def serve_variants(variants: dict[str, list[str]], photos: list[bytes], clients: list[int], requests: int,
                   logs: Path) -> dict:
    results = {}
    for name, args in variants.items():
        server = Server(args, logs / f"{name.replace(' ', '_')}.log")
        try:
            asyncio.run(load(server.url, photos, 2, 8, "classify"))  # warm-up
            row = {"cold_start_s": server.cold_start_s}
            for n in clients:
                row[n] = asyncio.run(load(server.url, photos, n, requests, "classify"))
                print(f"  {name:<12} {n:>3} clients: {row[n]['rps']:7.1f} req/s  p50 {row[n]['p50']:7.1f}  "
                      f"p95 {row[n]['p95']:7.1f}  p99 {row[n]['p99']:7.1f} ms  errors {row[n]['errors']}", flush=True)
            row["peak_rss_mb"] = server.peak_rss_mb()
            results[name] = row
        finally:
            server.stop()
    return results


def accuracy(facts: dict, int8: str, limit: int | None) -> dict:
    """Accuracy on the held-out photos of the .pkl (learn.predict), the ONNX and the int8 ONNX."""
    import torch
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage

    from bbc1k.modelmeta import read_onnx_meta
    from bbc1k.serving import decode_image, open_session, prepare, softmax

    torch.set_num_threads(2)
    items = [Path(p) for p in facts["valid_items"]][:limit]
    truth = [p.parent.name for p in items]
    learn = load_learner(facts["pkl"], cpu=True)
    vocab = [str(v) for v in learn.dls.vocab]
    probs = {"2020 .pkl": np.stack([learn.predict(PILImage.create(p))[2].numpy() for p in items])}
    for name, path in (("ONNX", facts["onnx"]), ("ONNX int8", int8)):
        meta = read_onnx_meta(path)
        sess = open_session(path, threads=2)
        x = np.stack([prepare(decode_image(p.read_bytes()).image, meta)[0] for p in items])
        logits = np.concatenate([sess.run(None, {meta.input_name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])
        probs[name] = softmax(logits)
    out = {}
    ref = probs["2020 .pkl"].argmax(1)
    for name, p in probs.items():
        pred = [vocab[i] for i in p.argmax(1)]
        out[name] = {"accuracy": float(np.mean([a == b for a, b in zip(pred, truth)])),
                     "agree_with_pkl": float(np.mean(p.argmax(1) == ref)),
                     "max_prob_diff_vs_pkl": float(np.abs(p - probs["2020 .pkl"]).max())}
    return {"n": len(items), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=240, help="requests per client count (default 240)")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    add_photos_arg(ap)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 server")
    ap.add_argument("--accuracy-limit", type=int, default=None, help="use only the first N held-out photos")
    ap.add_argument("--startup", nargs="*", metavar="DIR",
                    help="only measure cold start and RSS: the resnet34 @256 models, plus three models "
                         "(bbc-classifier, bbc-multitask, bbc-segmenter .onnx) from each DIR")
    ap.add_argument("--repeats", type=int, default=5, help="server starts per configuration (default 5)")
    a = ap.parse_args()
    a.photos = photos_dir(a.photos)
    if a.startup is not None:
        main_startup(a)
        return

    print("models (cached in runs/bench-serve/):", flush=True)
    facts = bench_models.classifier(a.photos)
    int8 = bench_models.quantized(facts["onnx"])
    three = bench_models.detector_and_segmenter()
    print(f"  resnet34 @256 from scratch: {facts['trained_with']}; valid accuracy {facts['valid_accuracy']:.3f}")
    for p in (facts["pkl"], facts["onnx"], int8):
        print(f"  {Path(p).name}: {Path(p).stat().st_size / 1e6:.1f} MB")

    photos = [p.read_bytes() for p in sorted(a.photos.glob("*/*.jpg"))]
    logs = bench_models.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    variants = {"2020 .pkl": ["--classifier", facts["pkl"], "--allow-pickle"],
                "ONNX": ["--classifier", facts["onnx"]]}
    if not a.no_int8:
        variants["ONNX int8"] = ["--classifier", int8]
    print(f"\nserving ({a.requests} requests per client count, {len(photos)} real photos, "
          f"CPUs {cpu_count()}; {load_note()}):", flush=True)
    res = serve_variants(variants, photos, a.clients, a.requests, logs)

    print("\nsummary:")
    print(f"  {'variant':<12} {'cold start':>10} {'peak RSS':>9}")
    for name, row in res.items():
        print(f"  {name:<12} {row['cold_start_s']:9.2f}s {row['peak_rss_mb']:7.0f}MB")
    base = res["2020 .pkl"]
    for name in [n for n in res if n != "2020 .pkl"]:
        for n in a.clients:
            r, b = res[name][n], base[n]
            print(f"  {name} vs 2020 at {n} clients: {r['rps'] / b['rps']:.2f}x requests/s, "
                  f"p99 {r['p99'] / b['p99']:.2f}x, p50 {r['p50'] / b['p50']:.2f}x")

    print("\nthree models loaded (classifier + resnet34 classify+detect + resnet34 U-Net at 256 px, all tasks, "
          f"segmenter batches of 2 at most; {load_note()}):", flush=True)
    for label, paths in (("float32", [facts["onnx"], three["detector"], three["segmenter"]]),
                         ("int8", [int8, bench_models.quantized(three["detector"]),
                                   bench_models.quantized(three["segmenter"])])):
        server = Server(["--classifier", paths[0], "--detector", paths[1], "--segmenter", paths[2]],
                        logs / f"three-{label}.log")
        try:
            loaded = server.rss_mb()
            r = asyncio.run(load(server.url, photos, 8, 32, "classify,detect,segment"))
            print(f"  {label:<8} cold start {server.cold_start_s:.2f} s; RSS loaded {loaded:.0f} MB, after 32 "
                  f"requests from 8 clients {server.rss_mb():.0f} MB, peak {server.peak_rss_mb():.0f} MB "
                  f"({r['rps']:.2f} req/s, p99 {r['p99']:.0f} ms, errors {r['errors']})", flush=True)
        finally:
            server.stop()

    print("\naccuracy on the held-out photos:", flush=True)
    acc = accuracy(facts, int8, a.accuracy_limit)
    for name in ("2020 .pkl", "ONNX", "ONNX int8"):
        v = acc[name]
        print(f"  {name:<10} accuracy {v['accuracy']:.3f} (n={acc['n']}); same class as .pkl "
              f"{v['agree_with_pkl']:.3f}; largest probability difference {v['max_prob_diff_vs_pkl']:.4f}")


def startup(configs: dict[str, list[str]], repeats: int, photos: list[bytes], logs: Path) -> None:
    """Cold start (process start to /readyz 200) and RSS of servers with the
    given model flags, each started ``repeats`` times on a fresh model cache
    (so the first start builds the optimised-graph cache and later ones reuse
    it): the first start's figures, then medians of the later starts."""
    import tempfile

    print(f"  {'models':<24} {'first start':>11} {'later starts':>12} {'RSS ready':>10} {'after load':>12} "
          f"{'peak':>6} {'1st req':>8} {'2nd req':>8}  (medians of {repeats - 1} later starts; RSS after 8 more "
          f"requests from 4 clients)")
    for name, args in configs.items():
        rows = []
        with tempfile.TemporaryDirectory(prefix="bbc1k-cache-") as cache:
            for _ in range(repeats):
                server = Server([*args, "--model-cache", cache], logs / f"startup-{name}.log")
                try:
                    ready = server.rss_mb()
                    tasks = "classify,detect,segment" if "--segmenter" in args else "classify"
                    one = asyncio.run(load(server.url, photos, 1, 1, tasks))  # the first request after ready
                    two = asyncio.run(load(server.url, photos, 1, 1, tasks))
                    r = asyncio.run(load(server.url, photos, 4, 8, tasks))
                    rows.append((server.cold_start_s, ready, server.rss_mb(), server.peak_rss_mb(), one["p50"],
                                 two["p50"], r["errors"] + one["errors"] + two["errors"]))
                finally:
                    server.stop()
        first, later = rows[0], np.asarray([r[:6] for r in rows[1:]])
        med = np.median(later, axis=0)
        print(f"  {name:<24} {first[0]:10.2f}s {med[0]:11.2f}s {med[1]:8.0f}MB {med[2]:10.0f}MB {med[3]:4.0f}MB"
              f" {med[4]:6.0f}ms {med[5]:6.0f}ms  (later starts {', '.join(f'{v:.2f}' for v in later[:, 0])} s; "
              f"errors {sum(r[6] for r in rows)})", flush=True)


def main_startup(a: argparse.Namespace) -> None:
    facts = bench_models.classifier(a.photos)
    int8 = bench_models.quantized(facts["onnx"])
    three = bench_models.detector_and_segmenter()
    three8 = [int8, bench_models.quantized(three["detector"]), bench_models.quantized(three["segmenter"])]
    configs = {"r34@256 classifier f32": ["--classifier", facts["onnx"]],
               "r34@256 classifier int8": ["--classifier", int8],
               "r34@256 three f32": ["--classifier", facts["onnx"], "--detector", three["detector"],
                                     "--segmenter", three["segmenter"]],
               "r34@256 three int8": ["--classifier", three8[0], "--detector", three8[1], "--segmenter", three8[2]]}
    for d in map(Path, a.startup):
        configs[f"{d.name} three f32"] = ["--classifier", str(d / "bbc-classifier.onnx"),
                                          "--detector", str(d / "bbc-multitask.onnx"),
                                          "--segmenter", str(d / "bbc-segmenter.onnx")]
    photos = [p.read_bytes() for p in sorted(a.photos.glob("*/*.jpg"))[::10]]
    logs = bench_models.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"cold start and memory ({a.repeats} starts each, CPUs {cpu_count()}; {load_note()}):", flush=True)
    startup(configs, a.repeats, photos, logs)


if __name__ == "__main__":
    main()
