#!/usr/bin/env bash
# ZeRO-1 data-parallel benchmark, all in one run on configs/bench.toml:
#   - step time at DP=1 and DP=2 (1 thread a rank), against the ideal DP=2
#     step (half the DP=1 step: each replica does half the micro-batches);
#   - how much of the gradient reduce-scatter the bucketed overlap hides: the
#     share of its bytes already reduced when the backward pass ends, and the
#     time the DP=2 run waits for the rest, with buckets (--ddp-bucket-size,
#     default) against one bucket sent when the backward pass is over;
#   - bus bandwidth of the run's reduce-scatter and all-gather (GradSync,
#     bench_grad_sync) against one plain MPI_Reduce_scatter_block /
#     MPI_Allgather of the same buffer, and of the all-gather inside the run.
#
#   scripts/bench_data_parallel.sh
#
# Env: MT_BUILD_DIR (build-dp), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1,
# MT_BENCH_BUCKET (1000000, the default --ddp-bucket-size), MT_BENCH_MAX_LOAD (0.5),
# MT_BENCH_LOAD_WAIT_S (300).
# Writes bench_out/dp_summary.json and prints a table (files: bench_out/dp_*).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_data_parallel.sh: error: $*" >&2; exit 1; }

build_dir="${MT_BUILD_DIR:-build-dp}"
rounds="${MT_BENCH_ROUNDS:-3}"
steps="${MT_BENCH_STEPS:-20}"
log_interval="${MT_BENCH_LOG_INTERVAL:-5}"
bucket="${MT_BENCH_BUCKET:-1000000}"
config=configs/bench.toml
out=bench_out
py=/usr/bin/python3
(( steps >= 2 * log_interval )) || die "MT_BENCH_STEPS ($steps) must be >= 2 x MT_BENCH_LOG_INTERVAL ($log_interval)"

if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS="moetrain bench_grad_sync" bash scripts/build.sh "$build_dir" \
        -DMOETRAIN_BUILD_TESTS=OFF -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench_gs="$build_dir/bench/bench_grad_sync"
[[ -x "$bin" && -x "$bench_gs" ]] || die "no moetrain or bench_grad_sync in $build_dir"

mpirun_cmd=(mpirun -np 2 --bind-to none --oversubscribe --mca btl_vader_single_copy_mechanism none)
[[ "$(id -u)" == 0 ]] && mpirun_cmd+=(--allow-run-as-root)

mkdir -p "$out"
rm -f "$out"/dp_*.jsonl "$out"/dp_*.log "$out"/dp_grad_sync_*.json "$out"/dp_summary.json
bench_headers
"$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$out/dp_corpus" > /dev/null

common=(train --config "$config" --data-path "$out/dp_corpus" --train-iters "$steps" --log-interval "$log_interval" --threads 1)
declare -A cmds=(
    [dp1]="$bin ${common[*]}"
    [dp2]="${mpirun_cmd[*]} $bin ${common[*]} --ddp-bucket-size $bucket"
    [dp2_one_bucket]="${mpirun_cmd[*]} $bin ${common[*]} --ddp-bucket-size 1000000000"
)
bench_wait_for_quiet_machine 300
count=""
for (( r = 1; r <= rounds; r++ )); do
    for name in dp1 dp2 dp2_one_bucket; do
        echo "bench: round $r/$rounds: $name: ${cmds[$name]}"
        ${cmds[$name]} --metrics-file "$out/dp_${name}_$r.jsonl" > "$out/dp_${name}_$r.log" 2>&1 \
            || { tail -20 "$out/dp_${name}_$r.log" >&2; die "$name run $r failed"; }
        grep '^step' "$out/dp_${name}_$r.log" | tail -1 | sed 's/^/    /'
    done
    # One replica's flat buffer, as the DP=2 run reports it.
    count=$(sed -n 's/^memory rank 0 .*: \([0-9]*\) parameters,.*/\1/p' "$out/dp_dp2_$r.log")
    [[ -n "$count" ]] || die "no memory line in $out/dp_dp2_$r.log"
    echo "bench: round $r/$rounds: bench_grad_sync $count $bucket"
    "${mpirun_cmd[@]}" "$bench_gs" --reps 20 --warmup 3 "$count" "$bucket" > "$out/dp_grad_sync_$r.json"
    sed 's/^/    /' "$out/dp_grad_sync_$r.json"
done
load_after=$(uptime)

"$py" - "$out" "$rounds" "$log_interval" "$load_before" "$load_after" "$(nproc)" \
      "${cmds[dp1]}" "${cmds[dp2]}" "${cmds[dp2_one_bucket]}" "$bench_gs --reps 20 --warmup 3 $count $bucket" <<'EOF'
import json, statistics, sys
out, rounds, log_interval, load_before, load_after, nproc, c1, c2, c3, cgs = sys.argv[1:]
rounds, log_interval = int(rounds), int(log_interval)
median = statistics.median

def run(name, r):
    recs = [json.loads(l) for l in open(f"{out}/dp_{name}_{r}.jsonl") if l.strip()]
    later = [m for m in recs if m["step"] > log_interval]  # the first interval is warm-up
    steps = log_interval * len(later)
    secs = sum(m["interval_s"] for m in later)
    rs_bytes = sum(m["dp_reduce_scatter_bytes"] for m in later)
    return {"step_s": secs / steps,
            "tokens_per_s": sum(m["global_batch_tokens"] * log_interval for m in later) / secs,
            "exposed_s_per_step": sum(m["dp_exposed_s"] for m in later) / steps,
            "all_gather_s_per_step": sum(m["dp_allgather_s"] for m in later) / steps,
            "all_gather_bytes_per_step": sum(m["dp_allgather_bytes"] for m in later) / steps,
            "reduce_scatter_bytes_per_step": sum(m["dp_reduce_scatter_bytes"] for m in later) / steps,
            "hidden_bytes_share": sum(m["dp_hidden_bytes"] for m in later) / rs_bytes if rs_bytes else 0.0}

runs = {n: [run(n, r) for r in range(1, rounds + 1)] for n in ("dp1", "dp2", "dp2_one_bucket")}
gs = [json.load(open(f"{out}/dp_grad_sync_{r}.json")) for r in range(1, rounds + 1)]
if not all(g["sums_ok"] for g in gs):
    sys.exit("bench_grad_sync: wrong sums")
m = {n: {k: median(x[k] for x in v) for k in v[0]} for n, v in runs.items()}
step1, step2 = m["dp1"]["step_s"], m["dp2"]["step_s"]
ideal2 = step1 / 2
exposed, exposed_one = m["dp2"]["exposed_s_per_step"], m["dp2_one_bucket"]["exposed_s_per_step"]
ag_bytes = m["dp2"]["all_gather_bytes_per_step"]
in_run_ag_busbw = ag_bytes / m["dp2"]["all_gather_s_per_step"] * 0.5 / 1e9
coll = {k: {"median_s": median(g[k]["median_s"] for g in gs), "busbw_GBps": median(g[k]["busbw_GBps"] for g in gs)}
        for k in ("grad_sync_reduce_scatter", "grad_sync_all_gather", "plain_reduce_scatter", "plain_all_gather")}
summary = {
    "nproc": int(nproc), "rounds": rounds, "load_before": load_before, "load_after": load_after,
    "commands": {"dp1": c1, "dp2": c2, "dp2_one_bucket": c3, "grad_sync": cgs},
    "medians": m, "runs": runs, "grad_sync": gs, "collectives": coll,
    "buckets": gs[0]["buckets"], "count": gs[0]["count"],
    "dp2_step_over_ideal": step2 / ideal2,
    "scaling_efficiency": ideal2 / step2,
    "wait_saved_share": 1 - exposed / exposed_one if exposed_one > 0 else None,
    "hidden_bytes_share": m["dp2"]["hidden_bytes_share"],
    "in_run_all_gather_busbw_GBps": in_run_ag_busbw,
}
json.dump(summary, open(f"{out}/dp_summary.json", "w"), indent=2)
print()
print(f"ZeRO-1, configs/bench.toml, 1 thread a rank, median of {rounds} rounds (first interval skipped)")
print(f"  DP=1 step {step1:.4f} s, {m['dp1']['tokens_per_s']:.0f} tok/s")
print(f"  DP=2 step {step2:.4f} s, {m['dp2']['tokens_per_s']:.0f} tok/s; ideal {ideal2:.4f} s; "
      f"step / ideal {step2 / ideal2:.3f} (scaling efficiency {ideal2 / step2:.3f})")
print(f"  reduce-scatter bytes complete before the backward pass ended: {m['dp2']['hidden_bytes_share']:.3f} "
      f"with {gs[0]['buckets']} buckets, {m['dp2_one_bucket']['hidden_bytes_share']:.3f} with one")
print(f"  reduce-scatter wait after backward: {exposed * 1e3:.2f} ms/step with {gs[0]['buckets']} buckets, "
      f"{exposed_one * 1e3:.2f} ms/step with one bucket -> wait saved {summary['wait_saved_share']:.3f}")
print(f"  all-gather in the run: {m['dp2']['all_gather_s_per_step'] * 1e3:.2f} ms/step, "
      f"busbw {in_run_ag_busbw:.3f} GB/s")
for k, v in coll.items():
    print(f"  {k:28s} {v['median_s'] * 1e3:8.2f} ms  busbw {v['busbw_GBps']:.3f} GB/s")
print(f"  GradSync / plain busbw: reduce-scatter "
      f"{coll['grad_sync_reduce_scatter']['busbw_GBps'] / coll['plain_reduce_scatter']['busbw_GBps']:.2f}, all-gather "
      f"{coll['grad_sync_all_gather']['busbw_GBps'] / coll['plain_all_gather']['busbw_GBps']:.2f}")
print(f"summary: {out}/dp_summary.json")
EOF
