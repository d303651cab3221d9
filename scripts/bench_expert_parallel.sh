#!/usr/bin/env bash
# Expert-parallel benchmark, all in one run on configs/bench.toml (E = 8,
# top-2, d = 256, micro-batch 4 x S 256 = 1024 tokens), 2 ranks, 1 thread a rank:
#   - the bytes one MoE layer's all-to-alls send a micro-batch, measured by
#     ExpertDispatch under balanced routing (bench_expert_dispatch), against
#     `moetrain plan`'s count for the same layout (they must be equal to the byte);
#   - that layer's dispatch time (counts, rows out, outputs back, dy out, dx
#     back, with the gathers and scatters around them) against plain
#     MPI_Alltoallv calls moving the same bytes (the ratio);
#   - step time at EP = 1 and EP = 2 (DP = 2 both: the same samples, routing
#     and products; EP 2 adds the all-to-alls and halves each rank's
#     experts), and the all-to-all bytes a step of the EP = 2 run (the
#     router's real imbalance) against the planner's balanced count.
#
#   scripts/bench_expert_parallel.sh
#
# Env: MT_BUILD_DIR (build), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1,
# MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (300).
# Writes bench_out/ep_summary.json and prints a table (files: bench_out/ep_*).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_expert_parallel.sh: error: $*" >&2; exit 1; }

build_dir="${MT_BUILD_DIR:-build}"
rounds="${MT_BENCH_ROUNDS:-3}"
steps="${MT_BENCH_STEPS:-20}"
log_interval="${MT_BENCH_LOG_INTERVAL:-5}"
config=configs/bench.toml
out=bench_out
py=/usr/bin/python3
(( steps >= 2 * log_interval )) || die "MT_BENCH_STEPS ($steps) must be >= 2 x MT_BENCH_LOG_INTERVAL ($log_interval)"

if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS="moetrain bench_expert_dispatch" bash scripts/build.sh "$build_dir" -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench_ed="$build_dir/bench/bench_expert_dispatch"
[[ -x "$bin" && -x "$bench_ed" ]] || die "no moetrain or bench_expert_dispatch in $build_dir"

mpirun_cmd=(mpirun -np 2 --bind-to none --oversubscribe --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS=1)
[[ "$(id -u)" == 0 ]] && mpirun_cmd+=(--allow-run-as-root)

mkdir -p "$out"
rm -f "$out"/ep_*.jsonl "$out"/ep_*.log "$out"/ep_dispatch_*.json "$out"/ep_plan.json "$out"/ep_summary.json
bench_headers
"$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$out/ep_corpus" > /dev/null

# The planner's figures for the EP = 2 run, and the layer shape they are for.
"$bin" plan --config "$config" --num-gpus 2 --ep 2 --json > "$out/ep_plan.json"
read -r tokens width experts topk < <("$py" - "$out/ep_plan.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
m, l = p["model"], p["layout"]
print(l["micro_batch_size"] * m["seq_length"], m["hidden_size"], m["num_experts"], m["moe_router_topk"])
EOF
)

common=(train --config "$config" --data-path "$out/ep_corpus" --train-iters "$steps" --log-interval "$log_interval" --threads 1)
declare -A cmds=(
    [ep1]="${mpirun_cmd[*]} $bin ${common[*]}"
    [ep2]="${mpirun_cmd[*]} $bin ${common[*]} --ep 2"
)
dispatch_cmd="${mpirun_cmd[*]} $bench_ed --reps 20 --warmup 3 $tokens $width $experts $topk"
bench_wait_for_quiet_machine 300
for (( r = 1; r <= rounds; r++ )); do
    for name in ep1 ep2; do
        echo "bench: round $r/$rounds: $name: ${cmds[$name]}"
        ${cmds[$name]} --metrics-file "$out/ep_${name}_$r.jsonl" > "$out/ep_${name}_$r.log" 2>&1 \
            || { tail -20 "$out/ep_${name}_$r.log" >&2; die "$name run $r failed"; }
        grep '^step' "$out/ep_${name}_$r.log" | tail -1 | sed 's/^/    /'
    done
    echo "bench: round $r/$rounds: $dispatch_cmd"
    $dispatch_cmd > "$out/ep_dispatch_$r.json" || die "bench_expert_dispatch failed"
    sed 's/^/    /' "$out/ep_dispatch_$r.json"
done
load_after=$(uptime)

"$py" - "$out" "$rounds" "$log_interval" "$load_before" "$load_after" "$(nproc)" \
      "${cmds[ep1]}" "${cmds[ep2]}" "$dispatch_cmd" <<'EOF'
import json, statistics, sys
out, rounds, log_interval, load_before, load_after, nproc, c1, c2, cd = sys.argv[1:]
rounds, log_interval = int(rounds), int(log_interval)
median = statistics.median

def run(name, r):
    recs = [json.loads(l) for l in open(f"{out}/ep_{name}_{r}.jsonl") if l.strip()]
    later = [m for m in recs if m["step"] > log_interval]  # the first interval is warm-up
    steps = log_interval * len(later)
    secs = sum(m["interval_s"] for m in later)
    return {"step_s": secs / steps,
            "tokens_per_s": sum(m["global_batch_tokens"] * log_interval for m in later) / secs,
            "alltoall_s_per_step": sum(m["ep_alltoall_s"] for m in later) / steps,
            "alltoall_bytes_per_step": sum(m["ep_alltoall_bytes"] for m in later) / steps}

plan = json.load(open(f"{out}/ep_plan.json"))
stage = plan["pipeline"]["stages"][0]
planned_layer = stage["ep_sent_bytes_per_micro_batch"] / stage["layers"]
planned_step = plan["communication"]["ep_sent_bytes"]
runs = {n: [run(n, r) for r in range(1, rounds + 1)] for n in ("ep1", "ep2")}
ds = [json.load(open(f"{out}/ep_dispatch_{r}.json")) for r in range(1, rounds + 1)]
if not all(d["results_ok"] for d in ds):
    sys.exit("bench_expert_dispatch: the tokens did not come back")
m = {n: {k: median(x[k] for x in v) for k in v[0]} for n, v in runs.items()}
measured_layer = ds[0]["bytes_sent_per_layer"]
dispatch = {k: median(d[k] for d in ds) for k in ("dispatch_median_s", "plain_alltoallv_median_s", "dispatch_over_plain")}
summary = {
    "nproc": int(nproc), "rounds": rounds, "load_before": load_before, "load_after": load_after,
    "commands": {"ep1": c1, "ep2": c2, "dispatch": cd, "plan": "moetrain plan --config configs/bench.toml --num-gpus 2 --ep 2 --json"},
    "medians": m, "runs": runs, "dispatch_runs": ds, "dispatch": dispatch,
    "layer_bytes_measured": measured_layer, "layer_bytes_planned": planned_layer,
    "layer_bytes_equal": measured_layer == planned_layer,
    "step_bytes_planned": planned_step,
    "step_bytes_measured_over_planned": m["ep2"]["alltoall_bytes_per_step"] / planned_step,
    "ep2_step_over_ep1": m["ep2"]["step_s"] / m["ep1"]["step_s"],
}
json.dump(summary, open(f"{out}/ep_summary.json", "w"), indent=2)
print()
print(f"expert parallelism, configs/bench.toml, 2 ranks, 1 thread a rank, median of {rounds} rounds")
print(f"  one layer's all-to-all bytes a micro-batch (balanced): measured {measured_layer:.0f}, "
      f"planned {planned_layer:.0f} -> {'equal' if measured_layer == planned_layer else 'DIFFERENT'}")
print(f"  one layer's dispatch {dispatch['dispatch_median_s'] * 1e3:.3f} ms, plain MPI_Alltoallv of the same bytes "
      f"{dispatch['plain_alltoallv_median_s'] * 1e3:.3f} ms -> ratio {dispatch['dispatch_over_plain']:.2f}")
print(f"  EP=1 (DP 2) step {m['ep1']['step_s']:.4f} s, {m['ep1']['tokens_per_s']:.0f} tok/s")
print(f"  EP=2 (DP 2) step {m['ep2']['step_s']:.4f} s, {m['ep2']['tokens_per_s']:.0f} tok/s "
      f"({summary['ep2_step_over_ep1']:.3f} x EP=1); all-to-alls {m['ep2']['alltoall_s_per_step'] * 1e3:.1f} ms a step")
print(f"  all-to-all bytes a step (the router's real load): {m['ep2']['alltoall_bytes_per_step']:.0f}, "
      f"planned (balanced) {planned_step:.0f} -> ratio {summary['step_bytes_measured_over_planned']:.3f}")
print(f"summary: {out}/ep_summary.json")
EOF
[[ "$("$py" -c "import json; print(json.load(open('$out/ep_summary.json'))['layer_bytes_equal'])")" == True ]] \
    || die "the measured all-to-all bytes differ from the planner's"
