"""Settings are checked at start: a value out of range (nan, 0 pixels, words
for numbers, a million-request queue) stops the server with one line naming
the setting, never a traceback, a hang or a server that refuses every image."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from app.config import NUMBERS, ROLES, SettingsError, build_parser, settings_from_args

BAD = {"PORT": "http", "MAX_BATCH": "abc", "MAX_WAIT_MS": "nan", "REQUEST_TIMEOUT": "nan", "MAX_PIXELS": "0",
       "MAX_QUEUE": "1000000", "SEGMENT_MAX_BATCH": "1e6", "UPLOAD_TIMEOUT": "inf", "THREADS": "-1",
       "ALLOW_PICKLE": "maybe", "CLASSIFIER_SHA256": "abc"}


def settings(argv: list[str] = ()):
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for n in NUMBERS:
        monkeypatch.delenv(n.env, raising=False)
    for role in ROLES:
        monkeypatch.delenv(role.upper(), raising=False)
        monkeypatch.delenv(f"{role.upper()}_SHA256", raising=False)
    for name in ("ALLOW_PICKLE", "FLOAT32", "LOG_LEVEL", "HOST"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_valid():
    s = settings()
    assert (s.port, s.max_batch, s.max_queue, s.request_timeout_s, s.upload_timeout_s) == (5000, 8, 64, 30, 10)
    assert s.shutdown_timeout_s < 10 and not s.float32


@pytest.mark.parametrize("name, value", list(BAD.items()))
def test_each_bad_value_is_one_line_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLASSIFIER", "model.onnx")  # what a SHA-256 belongs to
    with pytest.raises(SettingsError) as e:
        settings()
    (line,) = e.value.lines
    assert line.startswith(name) and "must be" in line, line


def test_flags_are_named_as_flags():
    with pytest.raises(SettingsError) as e:
        settings(["--max-batch", "0", "--max-wait-ms", "-1"])
    assert [line.split("=")[0] for line in e.value.lines] == ["--max-batch", "--max-wait-ms"]


def test_sha256_without_its_model_is_refused(monkeypatch):
    monkeypatch.setenv("DETECTOR_SHA256", "0" * 64)
    with pytest.raises(SettingsError, match="DETECTOR_SHA256 is set but DETECTOR is not"):
        settings()


def test_upload_deadline_stays_under_the_request_timeout():
    assert settings(["--request-timeout", "6"]).upload_timeout_s == 2  # a third, by default
    with pytest.raises(SettingsError, match="must not exceed REQUEST_TIMEOUT"):
        settings(["--request-timeout", "6", "--upload-timeout", "9"])


def test_server_prints_every_problem_and_exits_2_without_a_traceback(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "PORT"}, **BAD, "CLASSIFIER": "model.onnx"}
    r = subprocess.run([sys.executable, "-m", "app", "serve"], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(BAD) and all(line.startswith("bbc1k-serve: error: ") for line in lines), r.stderr
    assert "Traceback" not in r.stderr
