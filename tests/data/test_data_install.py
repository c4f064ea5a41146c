"""bbc1k.sources / bbc1k.data: download, extract, validate and install atomically."""
from __future__ import annotations

import hashlib
import os

import pytest
from data_zipkit import zip_dataset, zip_github, zip_members

from bbc1k import data, download, layout, sources
from bbc1k.download import DownloadError
from bbc1k.sources import DataError, install
from bbc1k.validate import validate


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_BASE_S", 0.0)


@pytest.fixture
def dataset_zip(synthetic_dataset) -> bytes:
    # Nested deeper than the original: the installer must find the folder holding images/.
    return zip_dataset(synthetic_dataset, prefix="export/v1/bbc_train/")


def _names(folder):
    return sorted(p.name for p in (folder / "images").iterdir())


def test_welchlabs_shaped_archive_installs_and_validates(http_server, tmp_path, dataset_zip, synthetic_dataset,
                                                         capsys):
    url = http_server.serve("/bbc_train.zip", dataset_zip, content_type="application/zip")
    digest = hashlib.sha256(dataset_zip).hexdigest()
    path = install("welchlabs", tmp_path, url=url, sha256=digest, progress=False)
    assert path == tmp_path / "bbc_train"
    assert validate(path).ok
    assert _names(path) == _names(synthetic_dataset)
    assert (path / "bboxes.json").read_bytes() == (synthetic_dataset / "bboxes.json").read_bytes()
    assert not (path / ".DS_Store").exists()
    assert layout.read_provenance(path)["source"] == "welchlabs"
    assert sorted(os.listdir(tmp_path)) == ["bbc_train"]  # archive, .part and temp folders gone
    out = capsys.readouterr().out
    assert "masks yes (24), boxes yes (24)" in out


def test_github_shaped_archive_becomes_labels_only_dataset(http_server, tmp_path, synthetic_dataset, capsys):
    url = http_server.serve("/master.zip", zip_github(synthetic_dataset))
    path = install("github", tmp_path, url=url, progress=False)
    report = validate(path)
    assert report.ok, report.format()
    assert report.n_images == 24 and not report.has_masks and not report.has_boxes
    rows = layout.read_labels(path)
    assert all(r.filename.startswith(r.label + "_") for r in rows)
    assert {r.label for r in rows} == set(layout.OBJECT_CLASSES)
    assert sorted(os.listdir(path)) == [".bbc1k-source.json", "classification_labels.csv", "images"]
    assert "boxes and masks are absent" in capsys.readouterr().out


@pytest.fixture
def existing(tmp_path):
    """A dataset already installed, that no failure may touch."""
    ds = tmp_path / "bbc_train"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "mine.jpg").write_bytes(b"precious")
    return ds


def _assert_kept(tmp_path, existing, allowed=()):
    assert (existing / "images" / "mine.jpg").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == sorted(["bbc_train", *allowed])


@pytest.mark.parametrize("fault, message", [
    ({"status": 404, "body": b"gone"}, "HTTP 404"),
    ({"body": b"<!doctype html><title>Quota exceeded</title>", "content_type": "text/html"}, "HTML page"),
])
def test_failed_download_keeps_existing_dataset(http_server, tmp_path, existing, fault, message):
    url = http_server.serve("/bbc_train.zip", **fault)
    with pytest.raises(DownloadError) as e:
        install("welchlabs", tmp_path, url=url, progress=False)
    text = str(e.value)
    assert message in text and url in text and "--url" in text and "--source synthetic" in text
    _assert_kept(tmp_path, existing)


def test_sha256_mismatch_keeps_existing_dataset(http_server, tmp_path, existing, dataset_zip):
    url = http_server.serve("/bbc_train.zip", dataset_zip)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        install("welchlabs", tmp_path, url=url, sha256="ab" * 32, progress=False)
    _assert_kept(tmp_path, existing)


def test_size_mismatch_of_the_original_keeps_existing_dataset(http_server, tmp_path, existing, dataset_zip,
                                                             monkeypatch):
    url = http_server.serve("/bbc_train.zip", dataset_zip)
    # The expected size applies to the source's own URL: point the source itself at the loopback.
    monkeypatch.setitem(sources.SOURCES, "welchlabs", sources.Source("welchlabs", url, 90_591_239, None, "test"))
    with pytest.raises(DownloadError, match=r"size mismatch.*expected 90,591,239"):
        install("welchlabs", tmp_path, progress=False)
    _assert_kept(tmp_path, existing)


def test_unsafe_archive_is_refused_and_nothing_is_written(http_server, tmp_path, existing, synthetic_dataset):
    url = http_server.serve("/bbc_train.zip", zip_dataset(synthetic_dataset, extra=[("../../escaped.txt", b"x")]))
    with pytest.raises(DataError, match=r"refused.*outside the folder"):
        install("welchlabs", tmp_path, url=url, progress=False)
    _assert_kept(tmp_path, existing)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_archive_without_a_dataset_is_refused(http_server, tmp_path, existing):
    url = http_server.serve("/x.zip", zip_members([("notes/readme.txt", b"hello")]))
    with pytest.raises(DataError, match="holds no dataset"):
        install("welchlabs", tmp_path, url=url, progress=False)
    _assert_kept(tmp_path, existing)


def test_successful_install_replaces_existing_dataset(http_server, tmp_path, existing, dataset_zip):
    url = http_server.serve("/bbc_train.zip", dataset_zip)
    install("welchlabs", tmp_path, url=url, progress=False)
    assert not (existing / "images" / "mine.jpg").exists()
    assert validate(existing).ok
    assert sorted(os.listdir(tmp_path)) == ["bbc_train"]


def test_interrupted_download_resumes_on_the_next_run(http_server, tmp_path, dataset_zip):
    url = http_server.serve("/bbc_train.zip", dataset_zip, drop_after=len(dataset_zip) // 3, drops=2)
    with pytest.raises(DownloadError, match="gave up"):
        install("welchlabs", tmp_path, url=url, progress=False, retries=1)
    assert not (tmp_path / "bbc_train").exists()
    path = install("welchlabs", tmp_path, url=url, progress=False, retries=0)
    assert validate(path).ok
    ranges = [r.headers.get("Range") for r in http_server.requests_for("/bbc_train.zip")]
    assert ranges == [None, f"bytes={len(dataset_zip) // 3}-", f"bytes={2 * (len(dataset_zip) // 3)}-"]


def test_synthetic_install(tmp_path):
    path = install("synthetic", tmp_path, n=6, seed=3, size=(64, 48), progress=False)
    report = validate(path)
    assert report.ok and report.n_images == 6 and dict(report.sizes) == {(64, 48): 6}
    assert layout.read_provenance(path)["seed"] == 3
    assert sorted(os.listdir(tmp_path)) == ["bbc_train"]


def test_get_reuses_a_matching_dataset(http_server, tmp_path, dataset_zip, capsys):
    url = http_server.serve("/bbc_train.zip", dataset_zip)
    first = data.get("welchlabs", tmp_path, url=url, progress=False)
    second = data.get("welchlabs", tmp_path, url=url, progress=False)
    assert first == second == tmp_path / "bbc_train"
    assert len(http_server.requests) == 1
    assert "using the dataset already at" in capsys.readouterr().out
    assert data.get("auto", tmp_path) == first  # auto takes any valid dataset, without network


def test_get_auto_falls_back_to_synthetic_when_unreachable(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(data, "probe", lambda url, timeout: "DNS lookup of www.welchlabs.io failed")
    path = data.get(dest=tmp_path, n_images=6, size=(64, 48), progress=False)
    assert validate(path).ok and layout.read_provenance(path)["source"] == "synthetic"
    assert "out of reach (DNS lookup" in capsys.readouterr().out
    # A different synthetic request does not reuse it.
    again = data.get("synthetic", tmp_path, n_images=9, size=(64, 48), progress=False)
    assert validate(again).n_images == 9


def test_get_auto_falls_back_when_the_download_fails(http_server, tmp_path, capsys):
    path = data.get(dest=tmp_path, url=http_server.url("/missing.zip"), n_images=3, size=(64, 48), progress=False)
    assert layout.read_provenance(path)["source"] == "synthetic"
    assert "HTTP 404" in capsys.readouterr().out


def _install_github(http_server, dest, synthetic_dataset):
    url = http_server.serve("/master.zip", zip_github(synthetic_dataset))
    return install("github", dest, url=url, progress=False)


@pytest.mark.parametrize("needs", [("boxes",), ("masks",), ("boxes", "masks")])
def test_get_refuses_a_source_without_what_the_lesson_needs(http_server, tmp_path, needs):
    url = http_server.serve("/master.zip", b"never fetched")
    with pytest.raises(DataError) as e:
        data.get("github", tmp_path, needs=needs, url=url, progress=False)
    text = str(e.value)
    assert "github source has class labels only" in text and " and ".join(needs) in text
    assert 'DATA_SOURCE = "welchlabs" or "synthetic"' in text
    assert http_server.requests == [] and not (tmp_path / "bbc_train").exists()


def test_get_auto_reuses_a_dataset_only_when_it_has_what_is_needed(http_server, monkeypatch, tmp_path,
                                                                   synthetic_dataset, capsys):
    github = _install_github(http_server, tmp_path, synthetic_dataset)
    assert data.get("auto", tmp_path) == github  # lesson 01 needs class labels only
    assert layout.read_provenance(github)["source"] == "github"
    capsys.readouterr()

    monkeypatch.setattr(data, "probe", lambda url, timeout: "offline")
    path = data.get("auto", tmp_path, needs=("boxes",), n_images=6, size=(64, 48), progress=False)
    report = validate(path)
    assert report.ok and report.has_boxes and layout.read_provenance(path)["source"] == "synthetic"
    assert "github dataset at" in capsys.readouterr().out
    # and the synthetic set, which has masks too, now serves lesson 03 as it is
    assert data.get("auto", tmp_path, needs=("masks",), n_images=6, size=(64, 48), progress=False) == path
    assert "using the dataset already at" in capsys.readouterr().out


def test_get_auto_leaves_a_hand_made_dataset_alone(monkeypatch, tmp_path, synthetic_dataset):
    import shutil

    mine = tmp_path / "bbc_train"
    shutil.copytree(synthetic_dataset, mine)
    shutil.rmtree(mine / "masks")
    monkeypatch.setattr(data, "probe", lambda url, timeout: pytest.fail("no download expected"))
    assert data.get("auto", tmp_path, needs=("boxes",)) == mine  # boxes it has
    with pytest.raises(DataError, match=r"has no masks.*put there by hand.*DATA_DIR"):
        data.get("auto", tmp_path, needs=("masks",))
    assert _names(mine) == _names(synthetic_dataset) and not (mine / "masks").exists()


def test_get_checks_that_a_mirror_has_what_is_needed(http_server, tmp_path, synthetic_dataset):
    import shutil

    no_masks = tmp_path / "src" / "bbc_train"
    shutil.copytree(synthetic_dataset, no_masks)
    shutil.rmtree(no_masks / "masks")
    url = http_server.serve("/mirror.zip", zip_dataset(no_masks))
    with pytest.raises(DataError, match=r"welchlabs dataset at .* has no masks.*\"synthetic\""):
        data.get("welchlabs", tmp_path / "data", needs=("masks",), url=url, progress=False)


def test_get_checks_what_it_is_asked_to_need(tmp_path):
    with pytest.raises(ValueError, match="'mask' unknown.*boxes and masks"):
        data.get("synthetic", tmp_path, needs=("mask",))


def test_labels_frame(synthetic_dataset):
    frame = data.labels_frame(synthetic_dataset.parent)
    assert list(frame.columns) == ["filename", "label", "label_index", "x0", "y0", "x1", "y1", "mask"]
    assert len(frame) == 24 and set(frame.label) == set(data.OBJECT_CLASSES)
    boxes = layout.read_boxes(synthetic_dataset)
    first = frame.iloc[0]
    x, y, w, h = boxes[first.filename][1]
    assert (first.x0, first.y0, first.x1, first.y1) == (x, y, x + w, y + h)
    assert (synthetic_dataset / "masks" / first["mask"]).is_file()


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected one of welchlabs, github, synthetic"):
        install("welchlab", tmp_path)
