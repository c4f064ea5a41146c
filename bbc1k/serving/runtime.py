"""ONNX Runtime sessions for serving: the CPUs this process may use (cgroup
quota included), and a cache of optimised graphs that later starts load as
they are, keyed on the model's content and checked on every read. ONNX
Runtime is imported only when a session is opened."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cpu_count() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", _cgroup2_quota), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if parse is not None:
            quota = parse(text)
        else:
            try:
                q = int(text)
                period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
                quota = q / period if q > 0 and period > 0 else None
            except (OSError, ValueError):
                quota = None
        if quota:
            n = min(n, max(1, int(quota + 0.5)))
            break
    return max(1, n)


def _cgroup2_quota(text: str) -> float | None:
    parts = text.split()
    if len(parts) == 2 and parts[0] != "max":
        try:
            return int(parts[0]) / int(parts[1])
        except (ValueError, ZeroDivisionError):
            return None
    return None


def session_options(ort: Any, threads: int | None) -> Any:
    """The session options the app serves with (ONNX Runtime module ``ort``; ``threads``: None for all CPUs)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cpu_count()
    opts.inter_op_num_threads = 1
    # Bounded memory over peak speed: without the arena and the memory pattern,
    # a large batch's activations are returned after the run instead of kept
    # (three resnet34-size models with batches of 8: peak 1.1 GB instead of 2.1 GB,
    # at the same speed on 2 CPUs).
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    # Idle worker threads sleep instead of spinning: the CPUs are shared with
    # the request decoding threads (and, on small hosts, with other services).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _cpu_signature() -> str:
    """What a graph optimised for this CPU depends on: its architecture and
    instruction set extensions (ORT's NCHWc layout follows the vector width)."""
    import platform

    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # e.g. its folder is a file: nothing was written there
        pass


def optimized_graph_path(path: str | os.PathLike, cache_dir: str | os.PathLike, *,
                         model_sha256: str | None = None) -> Path:
    """Where :func:`open_session` keeps the optimised graph of the model at
    ``path``: named by the SHA-256 of the model's bytes (``model_sha256``, else
    :func:`content_sha256`), the ONNX Runtime version and the CPU."""
    import onnxruntime as ort

    digest = model_sha256 or content_sha256(path, cache_dir)
    key = hashlib.sha256(f"{digest}|{ort.__version__}|{_cpu_signature()}".encode()).hexdigest()
    return Path(cache_dir) / f"ort-optimized-{key[:40]}.onnx"


def content_sha256(path: str | os.PathLike, memo_dir: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, remembered in ``memo_dir`` by its
    path, size, inode, modification time and change time: hashing a float32
    model takes longer than loading its cached graph. The change time is the
    one no writer can set back (os.utime sets it to now), so a model rewritten
    in place with the same size and modification time is hashed afresh."""
    from bbc1k.download import sha256_of

    st = os.stat(path)
    stamp = f"{Path(path).resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    memo = Path(memo_dir) / f"sha256-of-{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = sha256_of(path)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:  # an unwritable cache: hash again next time
        _remove(tmp)
    return digest


def _checksum_file(entry: Path) -> Path:
    """The SHA-256 of a cached graph as it was written, beside it."""
    return entry.with_name(entry.name + ".sha256")


def _intact(entry: Path) -> bool:
    """Whether the cached graph holds the bytes that were written: a graph
    with flipped bytes may still load, and answer wrongly."""
    from bbc1k.download import sha256_of

    try:
        expected = _checksum_file(entry).read_text().strip()
        return len(expected) == 64 and sha256_of(entry) == expected
    except OSError:
        return False


def _store(tmp: Path, entry: Path) -> None:
    """Move a freshly written graph into the cache with its checksum (each file
    atomically: a concurrent start sees a whole file or none, and a graph whose
    checksum is not yet there, or is another writer's, is only rebuilt)."""
    from bbc1k.download import sha256_of

    check = _checksum_file(entry)
    check_tmp = check.with_name(f".{check.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        check_tmp.write_text(sha256_of(tmp))
        os.replace(tmp, entry)
        os.replace(check_tmp, check)
    finally:
        _remove(check_tmp)


def open_session(path: str | os.PathLike, *, threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, model_sha256: str | None = None) -> Any:
    """An ONNX Runtime session with full graph optimisation, ``threads``
    intra-op threads (default: :func:`cpu_count`) and the GPU when ONNX
    Runtime has one.

    With ``cache_dir`` (CPU only), the optimised graph is saved there on the
    first load and loaded as it is on later ones: graph optimisation is most
    of a float32 model's load time, and the parsed-then-rewritten original
    leaves a freed heap as large as the weights behind. The entry is found by
    the model's SHA-256 (``model_sha256`` when the caller has it) and checked
    against the checksum written with it; one that does not match or cannot
    be loaded is deleted and the model loaded from ``path``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if cache_dir is None or providers != ["CPUExecutionProvider"]:
        # GPU graphs hold provider-specific nodes that are not to be saved.
        return ort.InferenceSession(str(path), sess_options=session_options(ort, threads), providers=providers)
    cached = optimized_graph_path(path, cache_dir, model_sha256=model_sha256)
    if cached.is_file() and not _intact(cached):
        log.warning("cached optimised graph %s does not match its checksum; rebuilding it", cached)
        _remove(cached)
    if cached.is_file():
        opts = session_options(ort, threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done before saving
        try:
            return ort.InferenceSession(str(cached), sess_options=opts, providers=providers)
        except Exception as e:  # damaged, or from an incompatible build: make it again
            log.warning("cached optimised graph %s cannot be loaded (%s: %s); rebuilding it",
                        cached, type(e).__name__, str(e)[:200])
            _remove(cached)
            _remove(_checksum_file(cached))
    opts = session_options(ort, threads)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    opts.optimized_model_filepath = str(tmp)
    # ORT warns that an NCHWc graph is hardware specific: the cache key holds the CPU's flags.
    opts.log_severity_level = 3
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:
        _remove(tmp)
        # Without saving; a model that cannot be loaded at all raises its own error here.
        session = ort.InferenceSession(str(path), sess_options=session_options(ort, threads), providers=providers)
        log.warning("cannot cache the optimised graph of %s in %s (%s: %s)", path, cached.parent,
                    type(e).__name__, str(e)[:200])
        return session
    try:
        _store(tmp, cached)
    except OSError as e:  # an unwritable cache only costs the speed-up
        log.warning("cannot cache the optimised graph of %s (%s)", path, e)
        _remove(tmp)
    return session
