#!/usr/bin/env bash
# The main job: set up, train the three demo models on the embedded synthetic
# data (the lessons run headless when ImageNet weights are within reach, the
# from-scratch recipes otherwise), then serve them at http://127.0.0.1:5000.
# A second run reuses the environment and the models and starts in seconds.
# Knobs: PORT, HOST, BBC1K_RETRAIN=1 (train again), CLASSIFIER / DETECTOR / SEGMENTER (other models).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements.txt requirements-serve.txt
"$PY" scripts/train_demo.py ${BBC1K_RETRAIN:+--retrain}

export CLASSIFIER="${CLASSIFIER:-models/bbc-classifier.onnx}"
export DETECTOR="${DETECTOR:-models/bbc-detector.onnx}"  # a box only: the classifier names it
export SEGMENTER="${SEGMENTER:-models/bbc-segmenter.onnx}"
echo "==> serving at http://${HOST:-127.0.0.1}:${PORT:-5000} (Ctrl-C stops)"
exec "$PY" -m app serve --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}"
