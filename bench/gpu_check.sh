#!/usr/bin/env bash
# The GPU checks, as one prepared run for a borrowed GPU machine that has
# torch but no fastai and no internet:
#
#   1. the from-scratch recipe beside fastai's defaults, alone on the card
#      (python -m bench.from_scratch: accuracy, img/s, time to the anchor's accuracy);
#   2. the four lessons at their full default settings (PRETRAINED=False: no
#      ImageNet download there), executed by papermill, together with
#      python -m bench.recipe_sweep filling the rest of the card.
#
#   OUT=/tmp/gpu-check PHOTOS=DIR bash bench/gpu_check.sh     (from the repository root)
#
# Wheels in .whl/ (fastai, papermill, ipykernel and what they need, for the
# machine's Python; fastprogress 1.0.3, since 1.1 imports python-fasthtml)
# are installed first when present. Everything lands in $OUT: log.txt,
# sweep.jsonl and the executed notebooks. DEADLINE (seconds) stops what is
# still running, so the results come back within the machine's time limit.
# For a quick rehearsal on a CPU: SCALE=0.01 LESSONS="01" LESSON_ARGS="-p N_IMAGES 60 ..."
# SWEEP_ARGS="--variants base --seeds 0".
set -u
OUT=${OUT:-/tmp/gpu-check}
PHOTOS=${PHOTOS:-${BBC1K_PHOTOS:-data/bbc-photos}}
DEADLINE=${DEADLINE:-560}
SCALE=${SCALE:-1}
LESSONS=${LESSONS:-01 02 03 04}
LESSON_ARGS=${LESSON_ARGS:-}
SWEEP_ARGS=${SWEEP_ARGS:---parallel 6}
WORK=${WORK:-/tmp/bbc1k-lessons}
mkdir -p "$OUT" "$WORK"
LOG=$OUT/log.txt
start=$(date +%s)
left() { local s=$((DEADLINE - ($(date +%s) - start))); echo $((s > 1 ? s : 1)); }
stamp() { echo "== $(($(date +%s) - start)) s: $*" >>"$LOG"; }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} MPLBACKEND=Agg
PY=${PY:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
stamp "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc
  "$PY" -c "import sys, torch, torchvision, fastai, onnxruntime, papermill; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'fastai', fastai.__version__, 'onnxruntime', onnxruntime.__version__, 'cuda', torch.cuda.is_available())"
} >>"$LOG" 2>&1

stamp "recipe beside fastai's defaults, alone on the card"
timeout "$(left)" "$PY" -m bench.from_scratch --photos "$PHOTOS" --time-budget 0 \
  --epochs "$("$PY" -c "from bbc1k.train.classifier import Recipe; print(max(1, round(Recipe().epochs * $SCALE)))")" \
  --anchor-epochs "$("$PY" -c "print(max(1, round(12 * $SCALE)))")" >>"$LOG" 2>&1

stamp "the lessons' dataset"
"$PY" -c "from bbc1k.data import get; get('auto', '$WORK/data', n_images=1000, seed=42, progress=False)" >>"$LOG" 2>&1

stamp "sweep and lessons together"
# shellcheck disable=SC2086  # SWEEP_ARGS is a list of options
OMP_NUM_THREADS=1 timeout "$(left)" "$PY" -m bench.recipe_sweep --photos "$PHOTOS" --epochs-scale "$SCALE" \
  --jsonl "$OUT/sweep.jsonl" $SWEEP_ARGS >>"$LOG" 2>&1 &
sweep=$!
pids=()
for nb in $LESSONS; do
  # shellcheck disable=SC2086  # LESSON_ARGS is a list of papermill options
  ( t0=$(date +%s)
    timeout "$(left)" "$PY" -m papermill --no-progress-bar "$nb"-*.ipynb "$OUT/$nb.ipynb" \
      -p PRETRAINED False -p DATA_DIR "$WORK/data" -p OUT_DIR "$WORK/models" $LESSON_ARGS >"$WORK/$nb.log" 2>&1
    rc=$?
    { echo "== lesson $nb: exit $rc after $(($(date +%s) - t0)) s"; tail -n 15 "$WORK/$nb.log"; } >>"$LOG" ) &
  pids+=($!)
done
wait "${pids[@]}"
stamp "lessons done"
"$PY" - "$WORK/models" >>"$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
from bbc1k.modelmeta import read_onnx_meta
for p in sorted(Path(sys.argv[1]).glob("*.onnx")):
    m = read_onnx_meta(str(p))
    facts = {k: v for k, v in (m.extra or {}).items() if k in ("architecture", "metrics", "n_train", "n_valid", "pretrained")}
    print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB task={m.task} classes={m.classes} "
          f"input={m.input_size} {json.dumps(facts)[:300]}")
EOF
wait "$sweep"
stamp "done"
