#!/usr/bin/env bash
# Tensor-parallel benchmark: tokens/s of configs/bench.toml at TP=1
# and TP=2, and the time the TP=2 run spends in its all-reduces against plain
# MPI_Allreduce calls of the same sizes, all in one run.
#
#   scripts/bench_tensor_parallel.sh
#
# Steps:
#   1. build moetrain and bench_allreduce (scripts/build.sh, build dir
#      MT_BUILD_DIR=build-tp, tests off);
#   2. make a token store from /usr/share/common-licenses + /usr/include/*.h
#      (as scripts/bench_throughput.sh does) in bench_out/tp_corpus;
#   3. wait (bounded) for the 1-minute load average to drop below MT_BENCH_MAX_LOAD;
#   4. MT_BENCH_ROUNDS (3) interleaved rounds of
#        (a) TP=1, one process, --threads 2, then TP=1, --threads 1;
#        (b) TP=2: mpirun -np 2, --tp 2 --threads 1 (2 ranks x 1 thread);
#        (c) mpirun -np 2 bench_allreduce with the element counts the TP=2 run
#            all-reduces (derived below from the config), warm (the buffers
#            stay in cache between calls, the usual micro-benchmark) and cold
#            (--flush-mib 64: each rank writes 64 MiB, twice the L3, before
#            each call, as a training step's products evict MPI's buffers);
#      each training run skips its first log interval as warm-up;
#   5. from the per-step call counts, the time plain MPI_Allreduce takes for one
#      step's all-reduces, against the measured tp_allreduce_s per step.
# Prints a table and writes bench_out/tp_summary.json (files: bench_out/tp_*).
#
# Env: MT_BUILD_DIR (build-tp), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1 to
# reuse an existing build, MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (600),
# MT_BENCH_ALLREDUCE_REPS (500 timed repetitions per size after 50 warm-up;
# the cold pass does a fifth of both), MT_BENCH_FLUSH_MIB (64, the cold pass).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_tensor_parallel.sh: error: $*" >&2; exit 1; }

build_dir="${MT_BUILD_DIR:-build-tp}"
rounds="${MT_BENCH_ROUNDS:-3}"
steps="${MT_BENCH_STEPS:-20}"
log_interval="${MT_BENCH_LOG_INTERVAL:-5}"
ar_reps="${MT_BENCH_ALLREDUCE_REPS:-500}"
flush_mib="${MT_BENCH_FLUSH_MIB:-64}"
config=configs/bench.toml
out=bench_out
py=/usr/bin/python3

(( rounds >= 1 )) || die "MT_BENCH_ROUNDS must be >= 1"
(( steps >= 2 * log_interval )) || die "MT_BENCH_STEPS ($steps) must be >= 2 x MT_BENCH_LOG_INTERVAL ($log_interval)"

# --- build ---------------------------------------------------------------------------
if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS="moetrain bench_allreduce" bash scripts/build.sh "$build_dir" \
        -DMOETRAIN_BUILD_TESTS=OFF -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench_ar="$build_dir/bench/bench_allreduce"
[[ -x "$bin" ]] || die "no moetrain binary in $build_dir"
[[ -x "$bench_ar" ]] || die "no $bench_ar (configure with -DMOETRAIN_BUILD_BENCH=ON)"

# The mpirun line of docs: no binding (a rank may use any core), shared-memory
# transport without the single-copy mechanism (unavailable in containers).
mpirun_cmd=(mpirun -np 2 --bind-to none --oversubscribe --mca btl_vader_single_copy_mechanism none)
[[ "$(id -u)" == 0 ]] && mpirun_cmd+=(--allow-run-as-root)

# --- token store -------------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/tp_metrics_*.jsonl "$out"/tp_*.log "$out"/tp_allreduce_*.json "$out"/tp_summary.json
bench_headers
echo "bench: token store from /usr/share/common-licenses + ${#headers[@]} headers of /usr/include"
"$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$out/tp_corpus"

# --- element counts of the TP=2 all-reduces, from the config -------------------------------
# Per micro-batch of T = micro-batch x S tokens (see model/transformer.cpp,
# model/feed_forward.cpp, parallel/tensor_parallel.cpp):
#   [T,d]: embedding output, per layer attention projection and FFN output
#          (forward), FFN and attention input gradients (backward), LM head
#          input gradient: 4L + 2 calls;
#   [T*K]: per layer the MoE routing-weight gradient (kept assignments; T*K
#          with --moe-expert-capacity-factor 0, no drops): L calls;
#   [T]:   cross-entropy row max (MPI_MAX; timed here as SUM): 1 call;
#   [2T]:  cross-entropy sums: 1 call.
# Per step: wk and wv gradients of every layer when G < TP ([G*hd, d], 2L
# calls, model/transformer.cpp reduce_partial_grads), and the gradient norm
# (1 double = 8 bytes, optim/adamw.cpp; timed here as 2 floats).
read -r -d '' plan_py <<'EOF' || true
import json, sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
tp = int(sys.argv[2])
L, d, H = cfg["num-layers"], cfg["hidden-size"], cfg["num-attention-heads"]
G, K, S = cfg["num-query-groups"], cfg["moe-router-topk"], cfg["seq-length"]
mb, gb = cfg["micro-batch-size"], cfg["global-batch-size"]
if cfg.get("moe-expert-capacity-factor", 0.0) != 0.0:
    sys.exit("the plan assumes --moe-expert-capacity-factor 0 (every assignment kept)")
T, hd, micro = mb * S, d // H, gb // mb
per_step = {}  # element count -> [calls per step, what]
def add(count, calls, what):
    e = per_step.setdefault(count, [0, []])
    e[0] += calls
    e[1].append(what)
add(T * d, micro * (4 * L + 2), "[T,d] activations and input gradients")
add(T * K, micro * L, "[T*K] routing-weight gradient")
add(T, micro, "[T] cross-entropy row max (MAX)")
add(2 * T, micro, "[2T] cross-entropy sums")
if G < tp:
    add(G * hd * d, 2 * L, "[G*hd,d] replicated wk/wv gradient")
add(2, 1, "gradient norm, 1 double (as 2 floats)")
print(json.dumps({"T": T, "d": d, "L": L, "K": K, "G": G, "micro_batches": micro,
                  "per_step": [{"count": c, "calls": v[0], "what": "; ".join(v[1])}
                               for c, v in sorted(per_step.items(), reverse=True)]}))
EOF
plan_json=$("$py" -c "$plan_py" "$config" 2)
echo "$plan_json" > "$out/tp_allreduce_plan.json"
read -r -a ar_counts < <("$py" -c 'import json,sys; print(" ".join(str(e["count"]) for e in json.load(sys.stdin)["per_step"]))' <<< "$plan_json")
echo "bench: TP=2 all-reduce element counts: ${ar_counts[*]} (calls per step in $out/tp_allreduce_plan.json)"

# --- wait for a quiet machine ------------------------------------------------------------
bench_wait_for_quiet_machine 600

# --- interleaved rounds -----------------------------------------------------------------------
common=(train --config "$config" --data-path "$out/tp_corpus" --train-iters "$steps" --log-interval "$log_interval")
tp1t2_cmd=("$bin" "${common[@]}" --threads 2)
tp1t1_cmd=("$bin" "${common[@]}" --threads 1)
tp2_cmd=("${mpirun_cmd[@]}" "$bin" "${common[@]}" --tp 2 --threads 1)
ar_cmd=("${mpirun_cmd[@]}" "$bench_ar" --reps "$ar_reps" --warmup 50 "${ar_counts[@]}")
cold_reps=$(( ar_reps / 5 > 20 ? ar_reps / 5 : 20 ))
ar_cold_cmd=("${mpirun_cmd[@]}" "$bench_ar" --reps "$cold_reps" --warmup 10 --flush-mib "$flush_mib" "${ar_counts[@]}")
echo "bench: tp1_t2:    ${tp1t2_cmd[*]} --metrics-file $out/tp_metrics_tp1_t2_R.jsonl"
echo "bench: tp1_t1:    ${tp1t1_cmd[*]} --metrics-file $out/tp_metrics_tp1_t1_R.jsonl"
echo "bench: tp2:       ${tp2_cmd[*]} --metrics-file $out/tp_metrics_tp2_R.jsonl"
echo "bench: allreduce: ${ar_cmd[*]}"
echo "bench: cold:      ${ar_cold_cmd[*]}"

run_train() {  # NAME ROUND CMD...
    local name=$1 r=$2; shift 2
    echo "bench: round $r/$rounds: $name"
    "$@" --metrics-file "$out/tp_metrics_${name}_$r.jsonl" > "$out/tp_${name}_$r.log" 2>&1 \
        || { tail -20 "$out/tp_${name}_$r.log" >&2; die "$name run $r failed (log: $out/tp_${name}_$r.log)"; }
    grep '^step' "$out/tp_${name}_$r.log" | sed 's/^/    /'
}
for (( r = 1; r <= rounds; r++ )); do
    run_train tp1_t2 "$r" "${tp1t2_cmd[@]}"
    run_train tp1_t1 "$r" "${tp1t1_cmd[@]}"
    run_train tp2 "$r" "${tp2_cmd[@]}"
    for kind in warm cold; do
        echo "bench: round $r/$rounds: bench_allreduce ($kind)"
        if [[ $kind == warm ]]; then cmd=("${ar_cmd[@]}"); else cmd=("${ar_cold_cmd[@]}"); fi
        "${cmd[@]}" > "$out/tp_allreduce_${kind}_$r.json" 2> "$out/tp_allreduce_${kind}_$r.log" \
            || { cat "$out/tp_allreduce_${kind}_$r.log" >&2; die "bench_allreduce ($kind) run $r failed"; }
        sed 's/^/    /' "$out/tp_allreduce_${kind}_$r.json"
    done
done

load_after=$(uptime)
echo "bench: load after: $load_after"

# --- summary ------------------------------------------------------------------------------
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
"$py" - "$out" "$rounds" "$log_interval" "$load_before" "$load_after" "$waited" "$cpu_model" \
      "$(nproc)" "${tp1t2_cmd[*]}" "${tp1t1_cmd[*]}" "${tp2_cmd[*]}" "${ar_cmd[*]}" "${ar_cold_cmd[*]}" <<'EOF'
import json, statistics, sys

(out, rounds, log_interval, load_before, load_after, waited, cpu_model, nproc,
 cmd_t2, cmd_t1, cmd_tp2, cmd_ar, cmd_ar_cold) = sys.argv[1:]
rounds, log_interval = int(rounds), int(log_interval)
plan = json.load(open(f"{out}/tp_allreduce_plan.json"))
median = statistics.median

def train_run(name, r):
    """Throughput and TP all-reduce time over the intervals after the first."""
    recs = [json.loads(l) for l in open(f"{out}/tp_metrics_{name}_{r}.jsonl") if l.strip()]
    later = [m for m in recs if m["step"] > log_interval]
    if not later:
        sys.exit(f"tp_metrics_{name}_{r}.jsonl has no interval after the warm-up")
    steps = sum(log_interval for _ in later)
    secs = sum(m["interval_s"] for m in later)
    toks = sum(m["global_batch_tokens"] * log_interval for m in later)
    ar_s = sum(m.get("tp_allreduce_s", 0.0) for m in later)
    ar_b = sum(m.get("tp_allreduce_bytes", 0.0) for m in later)
    return {"tokens_per_s": toks / secs, "step_s": secs / steps,
            "tp_allreduce_s_per_step": ar_s / steps, "tp_allreduce_bytes_per_step": ar_b / steps,
            "tp_allreduce_share": ar_s / secs,
            "interval_tokens_per_s": [m["tokens_per_s"] for m in recs],
            "interval_tp_allreduce_s": [m.get("tp_allreduce_s", 0.0) for m in recs]}

runs = {n: [train_run(n, r) for r in range(1, rounds + 1)] for n in ("tp1_t2", "tp1_t1", "tp2")}
tps = {n: median(x["tokens_per_s"] for x in v) for n, v in runs.items()}

# Plain MPI_Allreduce: per round, sum over sizes of calls per step x median time.
calls = {e["count"]: e["calls"] for e in plan["per_step"]}
plan_bytes = sum(4 * c * n for c, n in calls.items()) - 4 * 2 * calls.get(2, 0) + 8 * calls.get(2, 0)
def plain_runs(kind):
    runs = []
    for r in range(1, rounds + 1):
        res = json.load(open(f"{out}/tp_allreduce_{kind}_{r}.json"))
        by_count = {x["count"]: x for x in res["results"]}
        if not all(x["sum_ok"] for x in res["results"]):
            sys.exit(f"tp_allreduce_{kind}_{r}.json: wrong sums")
        step_s = sum(n * by_count[c]["median_s"] for c, n in calls.items())
        runs.append({"plain_s_per_step": step_s, "flush_mib": res["flush_mib"],
                     "results": res["results"], "mpi": res["mpi"]})
    return runs
ar_runs, cold_runs = plain_runs("warm"), plain_runs("cold")
plain = median(a["plain_s_per_step"] for a in ar_runs)
plain_cold = median(a["plain_s_per_step"] for a in cold_runs)
per_round_ratio = [t["tp_allreduce_s_per_step"] / a["plain_s_per_step"]
                   for t, a in zip(runs["tp2"], ar_runs)]
measured = median(x["tp_allreduce_s_per_step"] for x in runs["tp2"])
share = median(x["tp_allreduce_share"] for x in runs["tp2"])
meas_bytes = median(x["tp_allreduce_bytes_per_step"] for x in runs["tp2"])
big = max(calls)
big_median = median(next(x["median_s"] for x in a["results"] if x["count"] == big) for a in ar_runs)
big_busbw = median(next(x["busbw_GBps"] for x in a["results"] if x["count"] == big) for a in ar_runs)

summary = {
    "machine": {"cpu": cpu_model, "nproc": int(nproc), "mpi": ar_runs[0]["mpi"]},
    "rounds": rounds, "warmup_interval_skipped": True, "log_interval": log_interval,
    "load_before": load_before.strip(), "load_after": load_after.strip(), "load_wait_s": int(waited),
    "commands": {"tp1_t2": cmd_t2, "tp1_t1": cmd_t1, "tp2": cmd_tp2, "allreduce": cmd_ar,
                 "allreduce_cold": cmd_ar_cold},
    "tokens_per_s": tps,
    "runs": runs,
    "ratios": {"tp2_over_tp1_t2": tps["tp2"] / tps["tp1_t2"],
               "tp2_over_tp1_t1": tps["tp2"] / tps["tp1_t1"],
               "tp1_t2_over_tp1_t1": tps["tp1_t2"] / tps["tp1_t1"]},
    "allreduce_plan": plan,
    "allreduce_plan_bytes_per_step": plan_bytes,
    "tp2_allreduce": {
        "measured_s_per_step": measured,
        "measured_bytes_per_step": meas_bytes,
        "share_of_step_time": share,
        "plain_mpi_s_per_step": plain,
        "measured_over_plain": measured / plain,
        "measured_over_plain_per_round": per_round_ratio,
        "plain_cold_mpi_s_per_step": plain_cold,
        "measured_over_plain_cold": measured / plain_cold,
        "largest_count": big, "largest_median_s": big_median, "largest_busbw_GBps": big_busbw,
        "plain_runs": ar_runs,
        "plain_cold_runs": cold_runs,
    },
}
with open(f"{out}/tp_summary.json", "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

def runs_of(n, key="tokens_per_s", fmt="{:.0f}"):
    return ", ".join(fmt.format(x[key]) for x in runs[n])
print()
print(f"Tensor parallelism, configs/bench.toml, median of {rounds} rounds (first interval skipped)")
print(f"  {'TP=1, 1 rank x 2 threads, tokens/s':44s} {tps['tp1_t2']:10.0f}   (runs: {runs_of('tp1_t2')})")
print(f"  {'TP=1, 1 rank x 1 thread,  tokens/s':44s} {tps['tp1_t1']:10.0f}   (runs: {runs_of('tp1_t1')})")
print(f"  {'TP=2, 2 ranks x 1 thread, tokens/s':44s} {tps['tp2']:10.0f}   (runs: {runs_of('tp2')})")
print(f"  {'ratio TP2 / TP1 (2 threads)':44s} {tps['tp2'] / tps['tp1_t2']:10.3f}")
print(f"  {'ratio TP2 / TP1 (1 thread)':44s} {tps['tp2'] / tps['tp1_t1']:10.3f}")
print(f"  {'TP=2 step time, s':44s} {median(x['step_s'] for x in runs['tp2']):10.4f}")
print(f"  {'TP=2 all-reduce time per step (rank 0), s':44s} {measured:10.4f}   (runs: {runs_of('tp2', 'tp_allreduce_s_per_step', '{:.4f}')})")
print(f"  {'share of step time in TP all-reduces':44s} {share:10.3f}")
print(f"  {'all-reduce bytes per step, measured / plan':44s} {meas_bytes:10.0f} / {plan_bytes}")
if abs(meas_bytes - plan_bytes) > 0.5:
    print(f"  WARNING: the run all-reduced {meas_bytes:.0f} bytes a step, the plan {plan_bytes}: "
          "the plain figure does not cover the same calls")
print(f"  {'plain MPI_Allreduce, same calls, s per step':44s} {plain:10.4f}   (runs: " +
      ", ".join(f"{a['plain_s_per_step']:.4f}" for a in ar_runs) + ")")
print(f"  {'ratio measured / plain':44s} {measured / plain:10.2f}   (per round: " +
      ", ".join(f"{x:.2f}" for x in per_round_ratio) + ")")
print(f"  {'plain, caches flushed (cold), s per step':44s} {plain_cold:10.4f}   (runs: " +
      ", ".join(f"{a['plain_s_per_step']:.4f}" for a in cold_runs) + ")")
print(f"  {'ratio measured / plain cold':44s} {measured / plain_cold:10.2f}")
print(f"  plain MPI_Allreduce per size (median over rounds of the per-size medians), warm | cold:")
print(f"    {'count':>8s} {'bytes':>9s} {'calls/step':>10s} {'median_us':>10s} {'busbw_GB/s':>10s}"
      f" | {'median_us':>10s} {'busbw_GB/s':>10s}")
def per_size(runs, c, key):
    return median(next(x[key] for x in a["results"] if x["count"] == c) for a in runs)
for c, n in sorted(calls.items(), reverse=True):
    print(f"    {c:8d} {4 * c:9d} {n:10d} {per_size(ar_runs, c, 'median_s') * 1e6:10.1f}"
          f" {per_size(ar_runs, c, 'busbw_GBps'):10.3f} | {per_size(cold_runs, c, 'median_s') * 1e6:10.1f}"
          f" {per_size(cold_runs, c, 'busbw_GBps'):10.3f}")
print(f"summary: {out}/tp_summary.json")
EOF
