"""``python -m bbc1k`` and ``util/get_and_unpack.py``: exit codes and messages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from data_zipkit import zip_dataset, zip_github

from bbc1k import layout
from bbc1k.cli import main
from bbc1k.validate import validate

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_validate_ok_and_broken(synthetic_dataset, tmp_path):
    ok = _run("-m", "bbc1k", "validate", str(synthetic_dataset.parent))
    assert ok.returncode == 0, ok.stderr
    assert "24 images" in ok.stdout and "OK: no problems found" in ok.stdout
    broken = shutil.copytree(synthetic_dataset, tmp_path / "bbc_train")
    (broken / "images" / "synth_000003.jpg").write_bytes(b"garbage")
    bad = _run("-m", "bbc1k", "validate", str(broken))
    assert bad.returncode == 1
    assert "1 problem found" in bad.stdout and "synth_000003.jpg: unreadable image" in bad.stdout


def test_validate_of_a_folder_without_dataset(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 1
    assert "not a dataset" in capsys.readouterr().out


@pytest.mark.parametrize("args, hint", [
    (["download", "--source", "synthtic", "--dest", "x"], "did you mean 'synthetic'?"),
    (["download", "--sorce", "github"], "unknown option '--sorce': did you mean '--source'?"),
    (["downlod", "--source", "github"], "did you mean 'download'?"),
    (["synth", "--dest", "x", "--n", "5", "--seeed", "2"], "did you mean '--seed'?"),
    (["synth", "--size", "512by384"], "expected WIDTHxHEIGHT"),
])
def test_wrong_usage_names_the_right_thing(args, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert hint in capsys.readouterr().err


def test_misspelt_source_from_the_shell():
    r = _run("-m", "bbc1k", "download", "--source", "synthtic")
    assert r.returncode == 2
    assert "choose from 'welchlabs', 'github', 'synthetic'" in r.stderr and "did you mean 'synthetic'" in r.stderr


def test_download_from_mirror_and_404(http_server, synthetic_dataset, tmp_path):
    url = http_server.serve("/mirror/bbc_train.zip", zip_dataset(synthetic_dataset))
    r = _run("-m", "bbc1k", "download", "--source", "welchlabs", "--url", url, "--dest", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    assert "dataset ready" in r.stdout and "archive sha256" in r.stdout
    assert validate(tmp_path / "bbc_train").ok

    missing = http_server.url("/mirror/nothing.zip")
    r = _run("-m", "bbc1k", "download", "--source", "welchlabs", "--url", missing, "--dest", str(tmp_path), "-q")
    assert r.returncode == 1
    assert "HTTP 404" in r.stderr and missing in r.stderr and "--source synthetic" in r.stderr
    assert validate(tmp_path / "bbc_train").ok  # the installed dataset survived


def test_download_github_says_boxes_and_masks_are_absent(http_server, synthetic_dataset, tmp_path, capsys):
    url = http_server.serve("/master.zip", zip_github(synthetic_dataset))
    assert main(["download", "--source", "github", "--url", url, "--dest", str(tmp_path), "-q"]) == 0
    assert "boxes and masks are absent" in capsys.readouterr().out


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--dest", str(tmp_path), "--n", "5", "--seed", "7", "--size", "64x48", "-q"]) == 0
    report = validate(tmp_path)
    assert report.ok and report.n_images == 5 and dict(report.sizes) == {(64, 48): 5}
    assert "dataset ready" in capsys.readouterr().out


def test_synth_bad_seed_is_a_clear_error(tmp_path, capsys):
    assert main(["synth", "--dest", str(tmp_path), "--n", "5", "--seed", "-1", "-q"]) == 1
    assert "seed must be a non-negative integer" in capsys.readouterr().err
    assert not (tmp_path / "bbc_train").exists()


def test_get_and_unpack_is_a_thin_command(http_server, synthetic_dataset, tmp_path):
    url = http_server.serve("/unccv/deep_learning/bbc_train.zip", zip_dataset(synthetic_dataset))
    r = _run(str(REPO / "util" / "get_and_unpack.py"), "-url", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = validate(tmp_path / "data" / "bbc_train")  # default -dest is data
    assert report.ok and report.n_images == 24
    r = _run(str(REPO / "util" / "get_and_unpack.py"), "-url", url + ".missing", "-dest", str(tmp_path / "d2"))
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    assert not (tmp_path / "d2" / layout.DATASET_DIRNAME).exists()
