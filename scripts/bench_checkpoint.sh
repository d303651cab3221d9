#!/usr/bin/env bash
# Checkpoint bandwidth: save and load of an HDF5 checkpoint of the
# workstation MoE (configs/workstation-moe.toml: 9.2 M parameters, a 110 MB
# file of weights and both Adam moments) against a plain sequential write and
# read of the same bytes, at 1 rank and at 8 ranks (TP2 x PP2 x DP2), and the
# save against a training step of that config.
#
#   scripts/bench_checkpoint.sh            results in bench_out/checkpoint_summary.json
#
# Steps:
#   1. build moetrain and bench_checkpoint (scripts/build.sh, build dir MT_BUILD_DIR=build);
#   2. wait (bounded) for the machine to be quiet;
#   3. bench_checkpoint (bench/bench_checkpoint.cpp, Google Benchmark) at 1 rank
#      and under mpirun at 8 ranks: Save, Load, SequentialWrite (fwrite + fsync
#      of as many bytes into a new file), SequentialRead; MT_BENCH_REPS (3)
#      repetitions of MT_BENCH_ITERS (5) iterations each, the median reported;
#      plus `dd conv=fsync` of the same bytes as a cross-check of the write
#      baseline;
#   4. moetrain train --config configs/workstation-moe.toml for 6 steps
#      (log interval 3) with --save at the end, at 1 rank (2 threads, the
#      default on 2 cores) and at 8 ranks (1 thread each): the step time of
#      steps 4-6 against the "saved checkpoint ... in X s" line;
#   5. the summary (scripts/bench_py/checkpoint_summary.py): a table, and
#      bench_out/checkpoint_summary.json.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1, MT_BENCH_REPS (3), MT_BENCH_ITERS (5),
# MT_BENCH_DIR (bench_out/checkpoint: where checkpoints are written; put it on
# the file system you care about), MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (300).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

reps="${MT_BENCH_REPS:-3}"
iters="${MT_BENCH_ITERS:-5}"
dir="${MT_BENCH_DIR:-$out/checkpoint}"
bench_positive MT_BENCH_REPS "$reps"
bench_positive MT_BENCH_ITERS "$iters"

bench_build "${MT_BUILD_DIR:-build}" moetrain bench_checkpoint
bench="$build_dir/bench/bench_checkpoint"

mkdir -p "$dir"
# Only what this script writes: MT_BENCH_DIR may be a directory holding other things.
clean_dir() { rm -rf "$dir"/save_tp*_pp*_dp* "$dir"/train_1 "$dir"/train_8 "$dir"/sequential.bin "$dir"/dd.bin; }
clean_dir
rm -f "$out"/ckpt_*.json "$out"/ckpt_*.log "$out"/ckpt_*.jsonl "$out"/checkpoint_summary.json

# The workstation config's two sources: text (licenses) and code (headers).
[[ -s "$out/ckpt_text.bin" && -s "$out/ckpt_code.bin" ]] || bench_text_code_stores "$out/ckpt"

bench_wait_for_quiet_machine 300

export OMP_NUM_THREADS=1
bench_mpirun 8
bench_flags=(--dir="$dir" --iters="$iters" --benchmark_repetitions="$reps" --benchmark_format=console --benchmark_color=false)

# --- 3. save/load against sequential I/O ------------------------------------------
echo "bench: bench_checkpoint, 1 rank"
"$bench" "${bench_flags[@]}" --benchmark_out="$out/ckpt_bench_1.json" --benchmark_out_format=json \
    | tee "$out/ckpt_bench_1.log"
echo "bench: bench_checkpoint, 8 ranks (TP2 x PP2 x DP2)"
"${mpirun_cmd[@]}" "$bench" --tp=2 --pp=2 "${bench_flags[@]}" --benchmark_out="$out/ckpt_bench_8.json" \
    --benchmark_out_format=json | tee "$out/ckpt_bench_8.log"

saved=("$dir"/save_tp1_pp1_dp1/iter_*/checkpoint.h5)
bytes=$(stat -c %s "${saved[-1]}")
mib=$(( (bytes + 1048575) / 1048576 ))
echo "bench: dd of $mib MiB with conv=fsync (cross-check of SequentialWrite)"
for _ in $(seq "$reps"); do
    rm -f "$dir/dd.bin"   # a new file each time, as a save writes one
    LC_ALL=C dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$mib" conv=fsync 2>&1 | tail -1
done | tee "$out/ckpt_dd.log"
rm -f "$dir/dd.bin"

# --- 4. save against a training step -------------------------------------------------
# --lr-decay-samples: the config warms up over 320 samples, more than these 6
# steps; the schedule changes values, not the work.
train=(train --config configs/workstation-moe.toml --data-path text="$out/ckpt_text" code="$out/ckpt_code"
       --train-iters 6 --log-interval 3 --save-interval 0 --lr-decay-samples 100000)
echo "bench: training step vs save, 1 rank"
bench_logged "$out/ckpt_train_1.log" "train at 1 rank" \
    "$bin" "${train[@]}" --save "$dir/train_1" --metrics-file "$out/ckpt_train_1.jsonl"
echo "bench: training step vs save, 8 ranks"
bench_logged "$out/ckpt_train_8.log" "train at 8 ranks" \
    "${mpirun_cmd[@]}" "$bin" "${train[@]}" --tp 2 --pp 2 --save "$dir/train_8" --metrics-file "$out/ckpt_train_8.jsonl"
grep -h "saved checkpoint" "$out"/ckpt_train_1.log "$out"/ckpt_train_8.log
load_after=$(uptime)
echo "bench: load after: $load_after"
clean_dir   # about 440 MB of checkpoints and baseline files

# --- summary ---------------------------------------------------------------------------
"$py" scripts/bench_py/checkpoint_summary.py "$out" "$load_before" "$load_after"
