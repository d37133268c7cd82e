#!/usr/bin/env bash
# The GPU path measured in one prepared script: about 15 minutes on an H100/H200, in parts of under 10 minutes
# (a lent machine runs one command for at most 10 minutes: run `steps`, then `runs`).
#
#   DATA=/path/to/cifar10-jpeg.tar.gz OUT=gpu-check bash benchmarks/gpu_check.sh steps runs
#
# steps: the step benchmarks, functional against plain PyTorch, eager and compiled, at batch 128 and 512
#        (step_speed), bf16-mixed against fp32 for the functional step, eager and compiled (precision_speed),
#        and the language model's tokens/s, eager and compiled (lm_speed);
# runs:  the savings benchmark's quick mode in bf16-mixed, compiled, and a whole-set short-budget comparison of
#        full, random and the default rule (sundew_remembered at 30%) for 6 full-data epochs' time, one seed.
# airbench (not run by default): airbench94's network (--model airbench94) on full data for 10 epochs, bf16-mixed,
#        compiled, label smoothing 0.2, otherwise this framework's recipe (its test accuracy and train time per
#        epoch are in the run's history).
# Every part writes its JSON (and its log) under $OUT; ratios are measured interleaved within each benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(steps runs)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

run() {  # run NAME COMMAND...: the command's output in $OUT/NAME.log; a failed part does not stop the others
  local name=$1; shift
  echo "== $name: $*"
  "$@" > "$out/$name.log" 2>&1; local rc=$?
  tail -n 4 "$out/$name.log"; echo "== $name: exit $rc"
}

for part in "${parts[@]}"; do
  case $part in
    steps)
      for batch in 128 512; do
        run "step-speed-$batch" python -m benchmarks.step_speed --quick --device cuda --batch-size "$batch" \
          --samples $((batch * 32)) --json "$out/step-speed-$batch.json"
        run "precision-speed-$batch" python -m benchmarks.precision_speed --quick --device cuda --compile \
          --batch-size "$batch" --precisions bf16-mixed --json "$out/precision-speed-$batch.json"
      done
      run lm-speed python -m benchmarks.lm_speed --quick --device cuda --compile --json "$out/lm-speed.json"
      ;;
    runs)
      : "${DATA:?set DATA to the CIFAR-10 archive or folder}"
      run savings-quick-bf16 python -m benchmarks.savings --quick --data "$DATA" --precision bf16-mixed --compile \
        --json "$out/savings-quick-bf16/savings-quick-bf16.json" --checkpoint-dir "$out/checkpoints"
      run whole-set-short python -m experiments.cifar10 --data "$DATA" --compare full,random,sundew_remembered \
        --seeds 0 --budget-epochs 6 --device cuda --precision bf16-mixed --compile --checkpoint-dir "$out/checkpoints"
      ;;
    airbench)
      : "${DATA:?set DATA to the CIFAR-10 archive or folder}"
      # --lr 0.8: the best of 0.05, 0.2, 0.8 and 2.0 in a short CPU sweep at batch 256 (docs/design.md)
      run airbench94-full python -m experiments.cifar10 --data "$DATA" --model airbench94 --strategy full --epochs 10 \
        --batch-size 256 --lr 0.8 --label-smoothing 0.2 --device cuda --precision bf16-mixed --compile \
        --checkpoint-dir "$out/checkpoints"
      ;;
    *) echo "unknown part $part (steps, runs, airbench)" >&2; exit 2 ;;
  esac
done
