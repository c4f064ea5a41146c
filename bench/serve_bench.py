"""Serving benchmark: the 2020 design against this app, side by side, in one run.

    python -m bench.serve_bench --photos DIR [--requests 480] [--clients 8 32]
    python -m bench.serve_bench --tiny [--requests 16] [--clients 2 4]   # checks the benchmark itself

The same resnet34 classifier at 256 px (trained from scratch on the real
photos of ``--photos`` or $BBC1K_PHOTOS, cached in runs/bench-serve/; see
bench.bench_models) is served on loopback three ways:

- 2020 design: a Starlette app that loads the fastai ``.pkl`` with
  ``load_learner`` and calls ``learn.predict`` in the request handler
  (:func:`serve_2020`, this module run with ``--serve-2020``);
- this app as it starts by default: the int8 copy export wrote beside the model;
- this app with ``--float32``: the float32 ONNX export.

For each: cold start (process start to the first 200 of its ready probe), then
N concurrent clients posting real photos for a fixed number of requests:
requests/s, p50/p99 latency, errors, peak RSS of the server (VmHWM). Then the
RSS of this app with three full-size models, and the accuracy of the variants
on the held-out photos. Client and server share the CPUs.

Figures from a busy machine are not figures: it refuses to start while the
1-minute load average is above ``--max-load`` (after waiting ``--settle``
seconds for it to fall), and refuses to report a run during which processes
other than the server and this client used more than ``--max-other`` of a CPU
(read from /proc/stat against the server's and its own CPU time).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bbc1k.serving.runtime import cpu_count
from bench import bench_models
from bench.common import add_photos_arg, load_note, photos_dir
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


class Server:
    """A server process on a free loopback port, timed from its start to the first 200 of ``ready``."""

    def __init__(self, cmd: list[str], log: Path, ready: str = "/readyz"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.started = time.perf_counter()
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, *cmd, "--port", str(self.port)], stdout=f,
                                         stderr=subprocess.STDOUT, cwd=REPO)
        self.cold_start_s = self._wait_ready(ready)

    def _wait_ready(self, path: str, timeout: float = 300) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
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

    def cpu_s(self) -> float:
        return _process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def app_server(args: list[str], log: Path) -> Server:
    return Server(["-m", "app", "serve", "--host", "127.0.0.1", *args], log)


def server_2020(pkl: str, log: Path) -> Server:
    return Server(["-m", "bench.serve_bench", "--serve-2020", pkl], log, ready="/")


def serve_2020(pkl: str, port: int) -> None:
    """The 2020 design: the learner loaded at start, ``learn.predict`` in the handler."""
    import uvicorn
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    learn = load_learner(pkl)

    async def analyze(request):
        form = await request.form()
        data = await form["file"].read()
        prediction = learn.predict(PILImage.create(io.BytesIO(data)))[0]
        return JSONResponse({"result": str(prediction)})

    async def page(request):
        return PlainTextResponse("bbc1k 2020")

    app = Starlette(routes=[Route("/", page), Route("/analyze", analyze, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- the machine must be quiet --------------------------------------------------

def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (all threads)


def _busy_cpu_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK  # all but idle and iowait; guests are in user


def wait_for_quiet(max_load: float, settle: float) -> str:
    """Wait up to ``settle`` s for the 1-minute load average to fall to ``max_load``; exit if it does not."""
    deadline = time.monotonic() + settle
    while os.getloadavg()[0] > max_load:
        if time.monotonic() > deadline:
            raise SystemExit(f"refusing to measure: {load_note()} (above --max-load {max_load:g} after "
                             f"{settle:g} s): other work is running; run on a quiet machine")
        time.sleep(5)
    return load_note()


class OtherWork:
    """CPU time used by processes other than ``server`` and this client, between start and stop."""

    def __init__(self, server: Server):
        self.server = server

    def __enter__(self) -> OtherWork:
        self.t0 = time.perf_counter()
        self.busy0, self.own0 = _busy_cpu_s(), self.server.cpu_s() + _process_cpu_s(os.getpid())
        return self

    def __exit__(self, *exc) -> None:
        own = self.server.cpu_s() + _process_cpu_s(os.getpid()) - self.own0
        self.cpus = max(0.0, _busy_cpu_s() - self.busy0 - own) / (time.perf_counter() - self.t0)


async def load(url: str, photos: list[bytes], clients: int, requests: int, tasks: str | None = None) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    query = f"?tasks={tasks}" if tasks else ""

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/analyze{query}",
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
    return {"rps": requests / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "errors": errors}


def measure(variants: dict[str, Callable[[Path], Server]], photos: list[bytes], clients: list[int],
            requests: int, logs: Path, max_other: float) -> dict:
    results = {}
    for name, start in variants.items():
        server = start(logs / f"{name.replace(' ', '_')}.log")
        try:
            models = httpx.get(server.url + "/api/models").json()["models"] if "app" in name else []
            for m in models:  # what this app serves: the int8 copy, or the float32 model
                print(f"  {name}: {m['role']} from {m['file']} (int8: {m['quantized']})", flush=True)
            asyncio.run(load(server.url, photos, 2, 8))  # warm-up
            row = {"cold_start_s": server.cold_start_s}
            for n in clients:
                with OtherWork(server) as other:
                    row[n] = asyncio.run(load(server.url, photos, n, requests))
                if other.cpus > max_other:
                    raise SystemExit(f"refusing to report: during {name} at {n} clients other processes used "
                                     f"{other.cpus:.2f} CPUs (--max-other {max_other:g}); {load_note()}")
                r = row[n]
                print(f"  {name:<16} {n:>3} clients: {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f}  p99 {r['p99']:7.1f} ms"
                      f"  errors {r['errors']}  (others {other.cpus:.2f} CPUs)", flush=True)
            row["peak_rss_mb"] = server.peak_rss_mb()
            results[name] = row
        finally:
            server.stop()
    return results


def table(res: dict, clients: list[int]) -> None:
    base = res["2020 design"]
    print("\n| server | clients | req/s | p50 ms | p99 ms | req/s vs 2020 | p99 vs 2020 | cold start | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in res.items():
        for n in clients:
            r, b = row[n], base[n]
            print(f"| {name} | {n} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps'] / b['rps']:.2f}x "
                  f"| {r['p99'] / b['p99']:.2f}x | {row['cold_start_s']:.2f} s | {row['peak_rss_mb']:.0f} MB |")


def three_models(paths: dict[str, str], photos: list[bytes], logs: Path, float32: bool) -> None:
    args = [a for role, p in paths.items() for a in (f"--{role}", p)] + (["--float32"] if float32 else [])
    label = "float32" if float32 else "default (int8)"
    with tempfile.TemporaryDirectory(prefix="bbc1k-cache-") as cache:
        for start in ("first", "later"):  # the first start fills the optimised-graph cache
            server = app_server([*args, "--model-cache", cache], logs / f"three-{label}.log")
            try:
                loaded = server.rss_mb()
                r = asyncio.run(load(server.url, photos, 8, 32, "classify,detect,segment"))
                print(f"  {label:<15} {start} start {server.cold_start_s:.2f} s; RSS loaded {loaded:.0f} MB, "
                      f"peak {server.peak_rss_mb():.0f} MB after 32 requests of all tasks from 8 clients "
                      f"(errors {r['errors']})", flush=True)
            finally:
                server.stop()


def accuracy(facts: dict, limit: int | None) -> None:
    """Accuracy on the held-out photos of the .pkl (learn.predict), the ONNX and its int8 copy (app preprocessing)."""
    import torch
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage

    from bbc1k.modelmeta import read_onnx_meta
    from bbc1k.quantize import int8_path
    from bbc1k.serving import decode_image, open_session, prepare

    torch.set_num_threads(2)
    items = [Path(p) for p in facts["valid_items"]][:limit]
    truth = np.asarray([p.parent.name for p in items])
    learn = load_learner(facts["pkl"], cpu=True)
    with learn.no_bar():
        predicted = [str(learn.predict(PILImage.create(p))[0]) for p in items]
    print(f"  2020 .pkl   accuracy {np.mean(np.asarray(predicted) == truth):.3f} (n={len(items)})")
    for name, path in (("ONNX f32", facts["onnx"]), ("ONNX int8", str(int8_path(facts["onnx"])))):
        meta = read_onnx_meta(path)
        sess = open_session(path, threads=2)
        x = np.stack([prepare(decode_image(p.read_bytes()).image, meta)[0] for p in items])
        logits = np.concatenate([sess.run(None, {meta.input_name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])
        check = meta.extra.get("int8", {}).get("check")
        print(f"  {name:<11} accuracy {np.mean(np.asarray(meta.classes)[logits.argmax(1)] == truth):.3f} "
              f"(n={len(items)})" + (f"; the check recorded at export: {check}" if check else ""))


ORT_VARIANTS = {
    "as served": {},
    "spinning threads": {"session.intra_op.allow_spinning": "1"},
    "memory arena on": {"arena": True},
    "1 thread": {"threads": 1},
    "graph level EXTENDED": {"level": "ORT_ENABLE_EXTENDED"},
}
"""ONNX Runtime settings compared by ``--ort-settings``, each against the app's own (bbc1k.serving.runtime)."""


def ort_settings(facts: dict, repeats: int) -> None:
    """Time one image and a batch of 8 through the float32 model and its int8
    copy under each of :data:`ORT_VARIANTS`, interleaved (medians)."""
    import onnxruntime as ort

    from bbc1k.quantize import int8_path
    from bbc1k.serving.runtime import session_options

    sessions = {}
    for model in (facts["onnx"], str(int8_path(facts["onnx"]))):
        for name, v in ORT_VARIANTS.items():
            opts = session_options(ort, v.get("threads"))
            opts.log_severity_level = 3  # no warning for the setting overwritten below
            opts.enable_cpu_mem_arena = opts.enable_mem_pattern = bool(v.get("arena"))
            if "level" in v:
                opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, v["level"])
            for key, value in v.items():
                if key.startswith("session."):
                    opts.add_session_config_entry(key, value)
            label = f"{'int8' if 'int8' in model else 'f32'} {name}"
            sessions[label] = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    meta_size = sessions[next(iter(sessions))].get_inputs()[0].shape[-1]
    x1 = np.random.default_rng(0).standard_normal((1, 3, meta_size, meta_size)).astype(np.float32)
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in sessions}
    for _ in range(repeats):
        for n, sess in sessions.items():
            for b in (1, 8):
                t = time.perf_counter()
                sess.run(None, {sess.get_inputs()[0].name: np.repeat(x1, b, 0)})
                times[n][b].append(time.perf_counter() - t)
    for n, t in times.items():
        one, eight = np.median(t[1][1:]) * 1000, np.median(t[8][1:]) * 1000
        print(f"  {n:<26} 1 image {one:7.1f} ms   batch of 8 {eight:7.1f} ms ({8000 / eight:6.1f} images/s)")


def add_serving_args(ap: argparse.ArgumentParser) -> None:
    """The options every serving benchmark shares: the load, the photos, the tiny check, the quiet machine."""
    ap.add_argument("--requests", type=int, default=480, help="requests per client count (default 480)")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    add_photos_arg(ap)
    ap.add_argument("--tiny", action="store_true", help="a tiny untrained model on synthetic photos: checks the "
                    "benchmark in seconds (its figures mean nothing)")
    ap.add_argument("--max-load", type=float, default=0.5, help="1-minute load average above which it refuses "
                    "to start (default 0.5)")
    ap.add_argument("--settle", type=float, default=180, help="seconds to wait for the load to fall (default 180)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_serving_args(ap)
    ap.add_argument("--max-other", type=float, default=0.15, help="CPUs other processes may use during a run "
                    "before it refuses to report (default 0.15)")
    ap.add_argument("--accuracy-limit", type=int, default=None, help="use only the first N held-out photos")
    ap.add_argument("--ort-settings", type=int, metavar="REPEATS", default=0,
                    help="instead: compare ONNX Runtime session settings on the models, REPEATS rounds")
    ap.add_argument("--serve-2020", metavar="PKL", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_2020:
        serve_2020(a.serve_2020, a.port)
        return
    if a.tiny:
        facts = bench_models.tiny(Path(tempfile.gettempdir()) / "bbc1k-serve-bench-tiny")
        photos_folder = Path(facts["photos"])
    else:
        photos_folder = photos_dir(a.photos)
        print("models (cached in runs/bench-serve/):", flush=True)
        facts = bench_models.classifier(photos_folder)
        bench_models.int8_copy(facts["onnx"], facts)
    print(f"  classifier: {facts['trained_with']}; valid accuracy {facts['valid_accuracy']:.3f}")
    photos = [p.read_bytes() for p in sorted(photos_folder.glob("*/*.jpg"))]
    logs = Path(tempfile.mkdtemp(prefix="bbc1k-serve-bench-logs-"))
    note = wait_for_quiet(a.max_load, a.settle)
    if a.ort_settings:
        print(f"\nONNX Runtime settings ({cpu_count()} CPUs; {note}):", flush=True)
        ort_settings(facts, a.ort_settings)
        print(f"  after: {load_note()}")
        return
    print(f"\nserving ({a.requests} requests per client count, {len(photos)} photos, CPUs {cpu_count()}; "
          f"{note}; logs in {logs}):", flush=True)
    variants = {"2020 design": lambda log: server_2020(facts["pkl"], log),
                "this app (int8)": lambda log: app_server(["--classifier", facts["onnx"]], log),
                "this app --float32": lambda log: app_server(["--classifier", facts["onnx"], "--float32"], log)}
    res = measure(variants, photos, a.clients, a.requests, logs, a.max_other)
    table(res, a.clients)
    if not a.tiny:
        three = bench_models.detector_and_segmenter()
        for p in three.values():
            bench_models.int8_copy(p, tolerance=1.0)
        paths = {"classifier": facts["onnx"], **three}
        print(f"\nthree models (resnet34 classifier, classify+detect, U-Net at 256 px; {load_note()}):", flush=True)
        for float32 in (False, True):
            three_models(paths, photos[::10], logs, float32)
    print("\naccuracy on the held-out photos:", flush=True)
    accuracy(facts, a.accuracy_limit)


if __name__ == "__main__":
    main()
