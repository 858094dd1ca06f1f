#!/usr/bin/env bash
# Train the decoder on a lent GPU in one call, sized to the call's minutes (the device tool allows 10 minutes a
# command and 15 minutes of device time a session, start-up included).
#
#   device run:  bash scripts/gpu_decoder.sh            (timeout_s 600; PRESET, MINUTES, BATCH, LR, INIT may be set)
#   then here:   benchmarks/decoder_samplers.py --clip models/shapes-tiny/clip \
#                    --decoder models/shapes-tiny/decoder runs/gpu-decoder/model \
#                    --settings ddpm:7:guidance=2.5:guide=models/shapes-tiny/decoder_guide --n 1000 --split val
#
# What it does, on the device's python3 (its torch; unclip needs nothing it lacks) from the repository root:
# 1. a 120-step calibration run at the chosen batch (bf16 autocast, data-loader workers) to read samples/s;
# 2. the real run, its schedule (--set steps) sized so that it ends within MINUTES at that speed, `--max-minutes`
#    as the guard if the speed drops; warm-up 5% of the steps;
# 3. the EMA model, the run's config and its metrics log copied to $OUT (runs/gpu-decoder without a device).
# Its checkpoints stay in WORK on the device machine, which is bare at the next start: what comes back is the model
# (a bf16 run cannot be resumed on the CPU anyway, where bf16 autocast is refused).
# The preset's own recipe is kept except for what --set changes: batch, steps, learning rate, warm-up, workers,
# precision and the checkpoint interval.
set -euo pipefail
PRESET=${PRESET:-tiny-16-rb1-sc-focus7-cap20-wider-ft10}
INIT=${INIT:-models/shapes-tiny/decoder}
CLIP=${CLIP:-models/shapes-tiny/clip}
MINUTES=${MINUTES:-6.5}
BATCH=${BATCH:-256}
LR=${LR:-6e-4}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
OUT=${OUT:-runs/gpu-decoder}
PY=${PY:-python3}
WORK=${WORK:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

# The trainer's output less its progress bar; with pipefail the trainer's exit status decides the pipeline's (grep
# finding no line to print is not a failure), so a failed run stops the script instead of copying an older model.
quiet() { tr '\r' '\n' | { grep --line-buffered -v "^training:" || true; }; }
# A fresh run directory each call: a reused WORK would resume a finished run, or refuse one of another size.
rm -rf "$WORK/calibrate" "$WORK/run"

common=(--preset "$PRESET" --init-from "$INIT" --clip "$CLIP" --device "$DEVICE" --set batch_size="$BATCH"
        --set num_workers="$WORKERS" --set precision="$PRECISION" --set lr="$LR")
start=$(date +%s)
$PY -m unclip.cli train decoder "${common[@]}" --run-dir "$WORK/calibrate" --set steps=120 --set warmup_steps=10 \
    --set log_every=20 --set checkpoint_every=120 2>&1 | quiet
steps=$($PY - "$WORK/calibrate/metrics.jsonl" "$MINUTES" "$BATCH" "$start" <<'PY'
import json, sys, time
log = [json.loads(line) for line in open(sys.argv[1])]
rates = [r["samples_per_s"] for r in log if "samples_per_s" in r][1:]  # the first window holds the warm-up
minutes, batch, start = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
left = minutes * 60 - (time.time() - start) - 30  # 30 s for loading, the final save and the copy
if not rates or left < 60:
    sys.exit(f"calibration left {left:.0f} s of the {minutes} minutes (at least 60 needed) or logged no speed: "
             "give MINUTES more")
rate = sorted(rates)[len(rates) // 2]
print(max(100, int(rate * left / batch)))
print(f"calibration: {rate:.0f} samples/s at batch {batch}; {left:.0f} s left -> {int(rate * left / batch)} steps",
      file=sys.stderr)
PY
)
left_minutes=$($PY -c "import time; print(max(0.5, $MINUTES - (time.time() - $start) / 60 - 0.3))")
$PY -m unclip.cli train decoder "${common[@]}" --run-dir "$WORK/run" --set steps="$steps" \
    --set warmup_steps=$(( steps / 20 )) --set log_every=50 --set checkpoint_every=1000 --set hook_every=0 \
    --max-minutes "$left_minutes" 2>&1 | quiet
mkdir -p "$OUT/model"
cp "$WORK/run/model/"* "$OUT/model/"
cp "$WORK/run/config.json" "$OUT/run_config.json"
cp "$WORK/run/metrics.jsonl" "$OUT/metrics.jsonl"
tail -n 2 "$OUT/metrics.jsonl"
echo "wrote $OUT/model after $(( $(date +%s) - start )) s"
