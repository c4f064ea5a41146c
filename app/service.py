"""The request pipeline behind ``/analyze``: the loaded models, one
micro-batcher per model, and the decode and inference thread pools.

Requests are decoded in worker threads, batched per model
(:mod:`app.batching`) and run in one inference thread, so the event loop only
moves bytes.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.batching import MicroBatcher
from app.config import Settings
from app.heap import bound_heap, release_free_heap
from app.metrics import Metrics
from app.fetch import ModelError, Progress
from app.models import ServedModel, load_all
from bbc1k.serving.decode import decode_image
from bbc1k.serving.postprocess import MASK_COLOURS, box_to_image, mask_to_image, png_base64, probabilities
from bbc1k.serving.runtime import cpu_count

log = logging.getLogger("bbc1k.serve")
TASKS = ("classify", "detect", "segment")
LOAD_GRACE_S = 5.0
"""The watchdog waits this much past the load deadline, so a download's own
deadline error (the clearer one) comes first."""


def _hex(rgb: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


@dataclass(frozen=True)
class UploadInfo:
    """What the answer needs of a decoded upload once its pixels are dropped."""

    width: int
    height: int
    format: str
    scale: tuple[float, float]  # decoded image pixels to upload pixels (x, y)


class Service:
    """The loaded models, their batchers and the request pipeline."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.ready = False
        self.draining = False  # stopping: /readyz is 503 so that a load balancer sends nothing more
        self.failure: str | None = None
        self.in_progress = 0
        self.on_fatal = lambda: None  # set by app.server.serve(): stops the server
        workers = cpu_count()
        self.decode_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        # One inference thread: ONNX Runtime already uses every CPU inside one run.
        self.infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._loading: Future | None = None
        self._started = time.perf_counter()
        self.progress = Progress()

    # ---- start-up -------------------------------------------------------
    def start_loading(self) -> None:
        """Start loading the models in a thread (once): serve() calls it before
        importing and starting the web server, so the two overlap. A daemon
        thread: a load stuck past its deadline must not keep the process alive."""
        if self._loading is None:
            self._started = time.perf_counter()
            self._loading = future = Future()

            def work() -> None:
                try:
                    future.set_result(load_all(self.settings, self.progress))
                except BaseException as e:  # handed to load(), which says it in one line
                    future.set_exception(e)

            threading.Thread(target=work, name="load", daemon=True).start()

    def _fail(self, message: str) -> None:
        self.failure = message.replace("\n", "; ")
        log.error("bbc1k-serve: error: %s", self.failure)
        self.on_fatal()

    async def load(self) -> None:
        self.start_loading()
        limit = self.settings.load_timeout_s
        try:
            models = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._loading)), limit + LOAD_GRACE_S)
        except ModelError as e:
            return self._fail(str(e))
        except TimeoutError:
            return self._fail(f"the models did not load within LOAD_TIMEOUT={limit:g} s "
                              f"({self.progress.describe()})")
        except Exception as e:  # anything else while loading is fatal too, and said in one line
            return self._fail(f"loading the models failed ({type(e).__name__}: {e})")
        s = self.settings
        for role, model in models.items():
            if model.kind == "pickle":
                max_batch = 1  # the 2020 design: learn.predict on one image
            else:
                max_batch = min(s.max_batch, s.segment_max_batch) if role == "segmenter" else s.max_batch
            b = MicroBatcher(role, model.run, self.infer_pool, max_batch=max_batch,
                             max_wait_s=s.max_wait_ms / 1000, max_queue=s.max_queue,
                             on_batch=self.metrics.on_batch, on_depth=self.metrics.on_depth)
            b.start()
            self.batchers[role] = b
        self.models = models
        release_free_heap()  # what parsing and optimising the models freed
        bound_heap()  # from now on: set after loading, whose many weight buffers it would slow down
        self.ready = True
        if not models:
            log.warning("no model configured (set CLASSIFIER, DETECTOR and/or SEGMENTER); /analyze answers 503")
        log.info("ready in %.2f s: tasks %s", time.perf_counter() - self._started, ", ".join(self.tasks()) or "none")

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of /healthz: 200 when serving or starting within
        the load deadline; 503 once the start failed or outlived its deadline."""
        if self.ready:
            return 200, {"status": "ok"}
        seconds = round(time.perf_counter() - self._started, 1)
        if self.failure:
            return 503, {"status": "failed", "error": self.failure}
        if seconds > self.settings.load_timeout_s:
            return 503, {"status": "stuck", "seconds": seconds, "loading": self.progress.describe()}
        return 200, {"status": "starting", "seconds": seconds, "loading": self.progress.describe()}

    # ---- which models serve which task ------------------------------------
    def _classify_role(self) -> str | None:
        if "classifier" in self.models:
            return "classifier"
        det = self.models.get("detector")
        return "detector" if det and det.meta.output("class_logits") else None

    def tasks(self) -> list[str]:
        on = {"classify": self._classify_role() is not None, "detect": "detector" in self.models,
              "segment": "segmenter" in self.models}
        return [t for t in TASKS if on[t]]

    def parse_tasks(self, text: str | None) -> list[str]:
        """The tasks ``?tasks=`` names (all enabled ones when it is absent or
        empty); ValueError with a short message, which never echoes long input."""
        enabled = self.tasks()
        if text is None or text == "":
            return enabled
        asked = [t.strip() for t in text.split(",") if t.strip()]
        if not asked:
            raise ValueError(f"?tasks= names no task; choose from {', '.join(TASKS)}")
        unknown = list(dict.fromkeys(t for t in asked if t not in TASKS))
        if unknown:
            shown = ", ".join(repr(t if len(t) <= 20 else t[:20] + "...") for t in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise ValueError(f"unknown task(s) {shown}{more}; choose from {', '.join(TASKS)}")
        off = [t for t in asked if t not in enabled]
        if off:
            raise ValueError(f"task(s) {', '.join(off)} not available: no model loaded for them "
                             f"(available: {', '.join(enabled) or 'none'})")
        return [t for t in TASKS if t in asked]

    def _roles_for(self, tasks: list[str]) -> list[str]:
        roles = []
        if "classify" in tasks:
            roles.append(self._classify_role())
        if "detect" in tasks:
            roles.append("detector")
            if not self.models["detector"].meta.output("class_logits") and self._classify_role():
                roles.append(self._classify_role())  # the box's label comes from the classifier
        if "segment" in tasks:
            roles.append("segmenter")
        return list(dict.fromkeys(roles))

    # ---- the request pipeline ------------------------------------------------
    def _decode_and_prepare(self, data: bytes, roles: list[str]) -> tuple[UploadInfo, dict[str, Any]]:
        decoded = decode_image(data, max_pixels=self.settings.max_pixels, work_side=self.settings.work_side)
        prepared = {r: self.models[r].prepare(decoded.image) for r in roles}
        # Only the model inputs wait in the queues: the decoded pixels (up to 3 MB) are dropped now.
        return UploadInfo(decoded.width, decoded.height, decoded.format, decoded.scale), prepared

    async def analyze(self, data: bytes, tasks: list[str]) -> dict[str, Any]:
        """The answer for an uploaded image (already read: reading holds no queue slot)."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        roles = self._roles_for(tasks)
        decoded, prepared = await loop.run_in_executor(self.decode_pool, self._decode_and_prepare, data, roles)
        del data
        t1 = time.perf_counter()
        answers = await asyncio.gather(*(self.batchers[r].submit(prepared[r][0]) for r in roles))
        t2 = time.perf_counter()
        outputs = {r: a[0] for r, a in zip(roles, answers)}
        fits = {r: prepared[r][1] for r in roles}
        body = await loop.run_in_executor(self.decode_pool, self._answer, decoded, tasks, outputs, fits)
        body["timings_ms"] = {
            "decode": round((t1 - t0) * 1000, 2), "models": round((t2 - t1) * 1000, 2),
            "total": round((time.perf_counter() - t0) * 1000, 2),
            **{r: {"queue": a[1].queue_ms, "inference": a[1].inference_ms, "batch_size": a[1].batch_size}
               for r, a in zip(roles, answers)},
        }
        return body

    def _answer(self, decoded: UploadInfo, tasks: list[str], outputs: dict[str, dict[str, np.ndarray]],
                fits: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"image": {"width": decoded.width, "height": decoded.height,
                                          "format": decoded.format}, "tasks": tasks}
        if "classify" in tasks:
            role = self._classify_role()
            meta = self.models[role].meta
            probs = probabilities(outputs[role]["class_logits"], meta.classes)
            label = max(probs, key=probs.get)
            body["classification"] = {"label": label, "confidence": probs[label], "probabilities": probs,
                                      "model": meta.name}
            body["result"] = label  # what the 2020 client reads
        if "detect" in tasks:
            det = self.models["detector"]
            spec = det.meta.output("box")
            box = box_to_image(outputs["detector"]["box"], fits["detector"], decoded.scale,
                               tuple(spec.box_range or (-1.0, 1.0)))
            label, conf = None, None
            label_role = "detector" if det.meta.output("class_logits") else self._classify_role()
            if label_role:
                lp = probabilities(outputs[label_role]["class_logits"], self.models[label_role].meta.classes)
                label = max(lp, key=lp.get)
                conf = lp[label]
            body["detection"] = {"box": box, "box_format": "xyxy", "label": label, "confidence": conf,
                                 "model": det.meta.name}
        if "segment" in tasks:
            seg = self.models["segmenter"]
            mask = mask_to_image(outputs["segmenter"]["mask_logits"], fits["segmenter"])
            counts = np.bincount(np.asarray(mask).ravel(), minlength=len(seg.meta.classes))
            total = max(1, int(counts.sum()))
            body["segmentation"] = {
                "png_base64": png_base64(mask), "width": mask.width, "height": mask.height,
                "classes": seg.meta.classes,
                "colors": [_hex(MASK_COLOURS[i % len(MASK_COLOURS)]) for i in range(len(seg.meta.classes))],
                "fractions": {c: round(int(counts[i]) / total, 5) for i, c in enumerate(seg.meta.classes)},
                "model": seg.meta.name,
            }
        return body
