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
#      steps 4-6 against the "saved checkpoint ... in X s" line.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1, MT_BENCH_REPS (3), MT_BENCH_ITERS (5),
# MT_BENCH_DIR (bench_out/checkpoint: where checkpoints are written; put it on
# the file system you care about), MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (300).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_checkpoint.sh: error: $*" >&2; exit 1; }

build_dir="${MT_BUILD_DIR:-build}"
reps="${MT_BENCH_REPS:-3}"
iters="${MT_BENCH_ITERS:-5}"
out=bench_out
dir="${MT_BENCH_DIR:-$out/checkpoint}"
py=/usr/bin/python3
(( reps >= 1 && iters >= 1 )) || die "MT_BENCH_REPS and MT_BENCH_ITERS must be >= 1"

if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS="moetrain bench_checkpoint" bash scripts/build.sh "$build_dir" -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench="$build_dir/bench/bench_checkpoint"
[[ -x "$bin" ]] || die "no moetrain binary in $build_dir"
[[ -x "$bench" ]] || die "no $bench (configure with -DMOETRAIN_BUILD_BENCH=ON)"

mkdir -p "$out" "$dir"
# Only what this script writes: MT_BENCH_DIR may be a directory holding other things.
clean_dir() { rm -rf "$dir"/save_tp*_pp*_dp* "$dir"/train_1 "$dir"/train_8 "$dir"/sequential.bin "$dir"/dd.bin; }
clean_dir
rm -f "$out"/ckpt_*.json "$out"/ckpt_*.log "$out"/ckpt_*.jsonl "$out"/checkpoint_summary.json

# The workstation config's two sources: text (licenses) and code (headers).
bench_headers
[[ -s "$out/ckpt_text.bin" ]] || "$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/ckpt_text" >/dev/null
[[ -s "$out/ckpt_code.bin" ]] || "$bin" prepare-data --input "${headers[@]}" --output-prefix "$out/ckpt_code" >/dev/null

bench_wait_for_quiet_machine 300

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi=(mpirun -np 8 --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none)
bench_flags=(--dir="$dir" --iters="$iters" --benchmark_repetitions="$reps" --benchmark_format=console --benchmark_color=false)

# --- 3. save/load against sequential I/O ------------------------------------------
echo "bench: bench_checkpoint, 1 rank"
"$bench" "${bench_flags[@]}" --benchmark_out="$out/ckpt_bench_1.json" --benchmark_out_format=json \
    | tee "$out/ckpt_bench_1.log"
echo "bench: bench_checkpoint, 8 ranks (TP2 x PP2 x DP2)"
"${mpi[@]}" "$bench" --tp=2 --pp=2 "${bench_flags[@]}" --benchmark_out="$out/ckpt_bench_8.json" \
    --benchmark_out_format=json | tee "$out/ckpt_bench_8.log"

bytes=$(stat -c %s "$(ls -d "$dir"/save_tp1_pp1_dp1/iter_*/checkpoint.h5 | tail -1)")
mib=$(( (bytes + 1048575) / 1048576 ))
echo "bench: dd of $mib MiB with conv=fsync (cross-check of SequentialWrite)"
for r in $(seq "$reps"); do
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
"$bin" "${train[@]}" --save "$dir/train_1" --metrics-file "$out/ckpt_train_1.jsonl" > "$out/ckpt_train_1.log" 2>&1 \
    || { cat "$out/ckpt_train_1.log"; die "train at 1 rank failed"; }
echo "bench: training step vs save, 8 ranks"
"${mpi[@]}" "$bin" "${train[@]}" --tp 2 --pp 2 --save "$dir/train_8" --metrics-file "$out/ckpt_train_8.jsonl" \
    > "$out/ckpt_train_8.log" 2>&1 || { cat "$out/ckpt_train_8.log"; die "train at 8 ranks failed"; }
grep -h "saved checkpoint" "$out"/ckpt_train_1.log "$out"/ckpt_train_8.log
load_after=$(uptime)
echo "bench: load after: $load_after"
clean_dir   # about 440 MB of checkpoints and baseline files

# --- summary ---------------------------------------------------------------------------
"$py" - "$out" "$load_before" "$load_after" <<'PY'
import json, re, statistics, sys
out, load_before, load_after = sys.argv[1:4]

def medians(path):
    runs = json.load(open(path))["benchmarks"]
    by = {}
    for r in runs:
        if r.get("run_type") != "iteration":
            continue
        name = r["run_name"].split("/")[0]
        by.setdefault(name, []).append(r)
    res = {}
    for name, rs in by.items():
        res[name] = {"s": statistics.median(r["real_time"] for r in rs) / 1e3,  # ms -> s
                     "GBps": statistics.median(r["GB"] for r in rs), "bytes": rs[0]["bytes"],
                     "runs_GBps": [r["GB"] for r in rs]}
    return res

def dd_rates(path):
    rates = []
    for line in open(path):
        m = re.search(r"copied, ([0-9.]+) s", line)
        if m:
            rates.append(float(m.group(1)))
    return rates

def train_figures(log, metrics):
    recs = [json.loads(l) for l in open(metrics)]
    last = recs[-1]  # steps 4-6: the first interval is warm-up
    step_s = last["global_batch_tokens"] / last["tokens_per_s"]
    m = re.search(r"saved checkpoint \S+ in ([0-9.]+) s \(([0-9.]+) GB/s\)", open(log).read())
    save_s = float(m.group(1)) if m else float("nan")
    return {"step_s": step_s, "save_s": save_s, "save_over_step": save_s / step_s}

summary = {"load_before": load_before, "load_after": load_after, "layouts": {}}
for ranks, label in ((1, "1 rank"), (8, "8 ranks: TP2 x PP2 x DP2")):
    b = medians(f"{out}/ckpt_bench_{ranks}.json")
    row = {"label": label, "bench": b,
           "save_over_write": b["Save"]["GBps"] / b["SequentialWrite"]["GBps"],
           "load_over_read": b["Load"]["GBps"] / b["SequentialRead"]["GBps"],
           "train": train_figures(f"{out}/ckpt_train_{ranks}.log", f"{out}/ckpt_train_{ranks}.jsonl")}
    summary["layouts"][str(ranks)] = row
dd = dd_rates(f"{out}/ckpt_dd.log")
summary["dd_s"] = dd
nbytes = summary["layouts"]["1"]["bench"]["Save"]["bytes"]
print(f"\ncheckpoint file: {nbytes / 1e6:.1f} MB; dd conv=fsync of it: median {statistics.median(dd):.3f} s"
      f" ({nbytes / statistics.median(dd) / 1e9:.2f} GB/s)")
print(f"{'layout':<26} {'save GB/s':>9} {'write GB/s':>10} {'ratio':>6} {'load GB/s':>9} {'read GB/s':>9} {'ratio':>6}"
      f" {'step s':>7} {'save s':>7} {'save/step':>9}")
for r in summary["layouts"].values():
    b, t = r["bench"], r["train"]
    print(f"{r['label']:<26} {b['Save']['GBps']:>9.3f} {b['SequentialWrite']['GBps']:>10.3f} {r['save_over_write']:>6.2f}"
          f" {b['Load']['GBps']:>9.3f} {b['SequentialRead']['GBps']:>9.3f} {r['load_over_read']:>6.2f}"
          f" {t['step_s']:>7.3f} {t['save_s']:>7.3f} {t['save_over_step']:>9.2f}")
json.dump(summary, open(f"{out}/checkpoint_summary.json", "w"), indent=2)
PY
