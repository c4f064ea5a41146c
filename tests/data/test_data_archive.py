"""bbc1k.archive: safe extraction refuses what could write outside the destination."""
from __future__ import annotations

import os

import pytest
from data_zipkit import symlink_member, zip_members

from bbc1k.archive import ArchiveError, extract_zip


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def site(tmp_path):
    """``tmp_path/dest`` receives extractions; ``tmp_path/outside`` must stay empty."""
    (tmp_path / "dest").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def _extract(site, data: bytes, **kw):
    archive = site / "a.zip"
    archive.write_bytes(data)
    return extract_zip(archive, site / "dest", **kw)


def _assert_untouched(site):
    assert _tree(site / "dest") == []
    assert _tree(site / "outside") == []
    assert not (site / "evil.txt").exists()
    assert sorted(os.listdir(site)) == ["a.zip", "dest", "outside"]


def test_extracts_beside_destination_and_skips_mac_junk(site):
    tmp = _extract(site, zip_members([
        ("top/images/a.jpg", b"jpg"), ("top/bboxes.json", b"{}"),
        ("__MACOSX/top/._a.jpg", b"fork"), ("top/.DS_Store", b"junk"), ("./top/./b.txt", b"b"),
    ]))
    assert tmp.parent == site / "dest" and tmp.name.startswith(".extract-")
    assert _tree(tmp) == ["top", "top/b.txt", "top/bboxes.json", "top/images", "top/images/a.jpg"]
    assert (tmp / "top/images/a.jpg").read_bytes() == b"jpg"


@pytest.mark.parametrize("name, why", [
    ("../outside/evil.txt", r"outside the folder \(\.\.\)"),
    ("top/../../evil.txt", r"outside the folder \(\.\.\)"),
    ("..\\evil.txt", r"outside the folder \(\.\.\)"),
    ("/tmp/evil.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
])
def test_zip_slip_is_refused(site, name, why):
    with pytest.raises(ArchiveError, match=why):
        # the bad member comes last: nothing before it may be written either
        _extract(site, zip_members([("top/images/a.jpg", b"ok"), (name, b"evil")]))
    _assert_untouched(site)


def test_symlink_member_is_refused(site):
    with pytest.raises(ArchiveError, match="symbolic link"):
        _extract(site, zip_members([("top/images/a.jpg", b"ok"),
                                    (symlink_member("top/images/link.jpg", "/etc/passwd"), b"/etc/passwd")]))
    _assert_untouched(site)


def test_zip_bomb_ratio_is_refused(site):
    with pytest.raises(ArchiveError, match="zip bomb"):
        _extract(site, zip_members([("top/zeros.bin", bytes(20 << 20))]))
    _assert_untouched(site)


def test_archive_over_the_size_limit_is_refused(site):
    with pytest.raises(ArchiveError, match=r"inflate to 3,000 bytes, more than the 2,000 allowed"):
        _extract(site, zip_members([("a.bin", os.urandom(1500)), ("b.bin", os.urandom(1500))]), max_total=2000)
    _assert_untouched(site)


def test_forged_sizes_cannot_smuggle_bytes(site):
    data = bytearray(zip_members([("a.bin", b"x" * 5000)]))
    # Lower the declared uncompressed size in the central directory: zipfile reads
    # only that many bytes and the CRC check then fails, so nothing half-written stays.
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    with pytest.raises(ArchiveError, match="corrupt"):
        _extract(site, bytes(data))
    _assert_untouched(site)


def test_not_a_zip(site):
    with pytest.raises(ArchiveError, match="not a readable zip"):
        _extract(site, b"<!doctype html><html>quota exceeded</html>")
    _assert_untouched(site)
