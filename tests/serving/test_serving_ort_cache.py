"""The cache of ONNX Runtime's optimised graphs (bbc1k.serving.runtime.open_session
with cache_dir): written once, atomically, reused with the same answers, and
never in the way (a damaged entry is rebuilt, an unwritable folder is skipped).
The server's use of it across starts: tests/app/test_app_startup.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

from bbc1k.serving.runtime import open_session, optimized_graph_path


def _outputs(session, x: np.ndarray) -> list[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: x})


def test_cached_graph_is_written_once_and_gives_the_same_answers(tiny_models, tmp_path):
    src = tiny_models["detector"]
    cache = tmp_path / "opt"
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    plain = _outputs(open_session(src, threads=1), x)

    first = open_session(src, threads=1, cache_dir=cache)
    entry = optimized_graph_path(src, cache)
    assert entry.is_file() and entry.parent == cache
    assert not list(cache.glob(".*"))  # no temporary file left behind
    stamp = entry.stat().st_mtime_ns

    again = open_session(src, threads=1, cache_dir=cache)
    assert entry.stat().st_mtime_ns == stamp  # loaded, not rewritten
    # The bbc1k description survives optimisation: the server reads it from the session.
    assert "bbc1k" in again.get_modelmeta().custom_metadata_map
    for a, b, c in zip(plain, _outputs(first, x), _outputs(again, x)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


def test_cache_key_follows_the_model_bytes(tiny_models, tmp_path):
    a = optimized_graph_path(tiny_models["classifier"], tmp_path)
    b = optimized_graph_path(tiny_models["segmenter"], tmp_path)
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(tiny_models["classifier"].read_bytes())
    assert a != b
    assert optimized_graph_path(copy, tmp_path) == a  # same bytes, same entry, wherever the file lies
    copy.write_bytes(tiny_models["segmenter"].read_bytes())  # the file changes: its remembered hash is not used
    assert optimized_graph_path(copy, tmp_path) == b


def test_damaged_cache_entry_is_rebuilt(tiny_models, tmp_path):
    src = tiny_models["classifier"]
    entry = optimized_graph_path(src, tmp_path)
    entry.write_bytes(b"not a model")
    x = np.zeros((1, 3, 32, 32), np.float32)
    session = open_session(src, threads=1, cache_dir=tmp_path)
    np.testing.assert_allclose(_outputs(session, x)[0], _outputs(open_session(src, threads=1), x)[0], rtol=1e-5)
    assert entry.stat().st_size > 100  # replaced by a real graph
    open_session(src, threads=1, cache_dir=tmp_path)  # and that one loads


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_cache_folder_only_costs_the_speed_up(tiny_models, tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        session = open_session(tiny_models["classifier"], threads=1, cache_dir=cache)
        assert session.get_inputs()[0].name
        assert list(cache.iterdir()) == []
    finally:
        cache.chmod(0o700)


def test_cache_folder_that_is_a_file_only_costs_the_speed_up(tiny_models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    session = open_session(tiny_models["classifier"], threads=1, cache_dir=blocker)
    assert session.get_inputs()[0].name
    assert blocker.read_text() == "in the way"


def test_a_broken_model_still_says_why(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(Exception) as info:
        open_session(bad, threads=1, cache_dir=tmp_path / "opt")
    assert "protobuf" in str(info.value).lower()
    opt = tmp_path / "opt"
    assert not list(opt.glob("ort-optimized-*")) and not list(opt.glob(".*"))  # no entry, no temporary file


def _with_changed_weights(src, dst) -> None:
    """``dst``: the model at ``src`` with other weights, serialised to the same number of bytes."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size > 1:
            t.CopyFrom(numpy_helper.from_array((a * -3 + 0.5).astype(np.float32), t.name))
    data = proto.SerializeToString()
    assert len(data) == os.path.getsize(src)
    with open(dst, "r+b" if os.path.exists(dst) else "wb") as f:  # in place: the same inode
        f.write(data)
        f.truncate()


def test_cached_graph_with_flipped_bytes_is_rebuilt_not_served(tiny_models, tmp_path):
    """A cached graph that still loads but no longer matches what was written gives the model's answers."""
    src = tiny_models["classifier"]
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    want = _outputs(open_session(src, threads=1), x)[0]
    open_session(src, threads=1, cache_dir=tmp_path)
    entry = optimized_graph_path(src, tmp_path)
    _with_changed_weights(entry, entry)  # loads fine, answers differently
    got = _outputs(open_session(src, threads=1, cache_dir=tmp_path), x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and the entry was rebuilt: the next start loads the right graph from the cache
    np.testing.assert_allclose(_outputs(open_session(src, threads=1, cache_dir=tmp_path), x)[0], want,
                               rtol=1e-5, atol=1e-6)


def test_model_replaced_in_place_with_same_size_and_mtime_gets_its_own_graph(tiny_models, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_models["classifier"].read_bytes())
    x = np.random.default_rng(2).random((2, 3, 32, 32), dtype=np.float32)
    old = _outputs(open_session(model, threads=1, cache_dir=tmp_path / "opt"), x)[0]
    st = model.stat()
    _with_changed_weights(model, model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (model.stat().st_size, model.stat().st_mtime_ns, model.stat().st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)
    want = _outputs(open_session(model, threads=1), x)[0]
    assert not np.allclose(want, old)
    got = _outputs(open_session(model, threads=1, cache_dir=tmp_path / "opt"), x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
