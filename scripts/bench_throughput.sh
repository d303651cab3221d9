#!/usr/bin/env bash
# Training-throughput benchmark: moetrain on configs/bench.toml
# against the machine's sgemm peak and against PyTorch eager, in one run.
#
#   scripts/bench_throughput.sh [THREADS]        THREADS defaults to nproc
#
# Steps, all with the same thread count:
#   1. build moetrain and bench_sgemm (scripts/build.sh, build dir MT_BUILD_DIR=build);
#   2. make a token store from /usr/share/common-licenses + /usr/include/*.h;
#   3. bench_sgemm: sgemm GFLOP/s of a 1024^3 product (the peak) and the model's shapes;
#   4. MT_BENCH_ROUNDS (2) interleaved rounds of moetrain train then
#      scripts/bench_torch.py; each moetrain run skips its first log interval as
#      warm-up, bench_torch.py runs the same number of measured steps after
#      --warmup 1; the median over rounds is reported.
# Prints a table and writes bench_out/summary.json (everything lands in bench_out/).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_ROUNDS (2), MT_BENCH_STEPS (20, train
# steps of a moetrain run), MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped),
# MT_BENCH_SKIP_BUILD=1 to reuse an existing build, MT_BENCH_MAX_LOAD (0.5) and
# MT_BENCH_LOAD_WAIT_S (300): before measuring, wait up to that long for the
# 1-minute load average to fall below MT_BENCH_MAX_LOAD (our own build included).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_throughput.sh: error: $*" >&2; exit 1; }

threads="${1:-$(nproc)}"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$threads'"
build_dir="${MT_BUILD_DIR:-build}"
rounds="${MT_BENCH_ROUNDS:-2}"
steps="${MT_BENCH_STEPS:-20}"
log_interval="${MT_BENCH_LOG_INTERVAL:-5}"
config=configs/bench.toml
out=bench_out
py=/usr/bin/python3

(( rounds >= 1 )) || die "MT_BENCH_ROUNDS must be >= 1"
(( steps >= 2 * log_interval )) || die "MT_BENCH_STEPS ($steps) must be >= 2 x MT_BENCH_LOG_INTERVAL ($log_interval)"
torch_steps=$(( steps - log_interval ))   # as many measured steps as moetrain's later intervals

echo "bench: $threads threads, $rounds rounds, moetrain $steps steps (first $log_interval skipped), torch $torch_steps steps + 1 warm-up"

# --- dependencies and build ---------------------------------------------------
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "bench: PyTorch missing for $py; installing python3-torch"
    bash scripts/install_deps.sh --torch
fi
if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS="moetrain bench_sgemm" bash scripts/build.sh "$build_dir" -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench_sgemm="$build_dir/bench/bench_sgemm"
[[ -x "$bin" ]] || die "no moetrain binary in $build_dir"
[[ -x "$bench_sgemm" ]] || die "no $bench_sgemm (configure with -DMOETRAIN_BUILD_BENCH=ON)"

# --- token store ----------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/metrics_*.jsonl "$out"/train_*.log "$out"/torch_*.json "$out"/torch_*.log \
      "$out"/sgemm.json "$out"/summary.json
bench_headers
echo "bench: token store from /usr/share/common-licenses + ${#headers[@]} headers of /usr/include"
"$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$out/corpus"

# Other processes on the machine slow every figure below: wait (bounded) for
# the load, our own build's included, to settle, then record it.
bench_wait_for_quiet_machine 300

# --- (a) sgemm peak -----------------------------------------------------------------
echo "bench: sgemm ($bench_sgemm --threads=$threads)"
# 3 repetitions each; the console shows the medians, sgemm.json keeps every repetition.
"$bench_sgemm" --threads="$threads" --benchmark_repetitions=3 \
    --benchmark_display_aggregates_only=true \
    --benchmark_out="$out/sgemm.json" --benchmark_out_format=json \
    | grep -v -E '_(mean|stddev|cv) '

# --- (b) + (c) interleaved training runs -------------------------------------------
train_cmd=("$bin" train --config "$config" --data-path "$out/corpus" --threads "$threads"
    --train-iters "$steps" --log-interval "$log_interval")
torch_cmd=("$py" scripts/bench_torch.py --threads "$threads" --steps "$torch_steps" --warmup 1)
echo "bench: moetrain: ${train_cmd[*]} --metrics-file $out/metrics_R.jsonl"
echo "bench: torch:    ${torch_cmd[*]}"
for (( r = 1; r <= rounds; r++ )); do
    echo "bench: round $r/$rounds: moetrain"
    "${train_cmd[@]}" --metrics-file "$out/metrics_$r.jsonl" > "$out/train_$r.log" 2>&1 \
        || { tail -20 "$out/train_$r.log" >&2; die "moetrain run $r failed (log: $out/train_$r.log)"; }
    grep '^step' "$out/train_$r.log" | sed 's/^/    /'
    echo "bench: round $r/$rounds: torch"
    "${torch_cmd[@]}" > "$out/torch_$r.log" 2>&1 \
        || { tail -20 "$out/torch_$r.log" >&2; die "bench_torch.py run $r failed (log: $out/torch_$r.log)"; }
    tail -n 1 "$out/torch_$r.log" > "$out/torch_$r.json"
    sed 's/^/    /' "$out/torch_$r.json"
done

load_after=$(uptime)
echo "bench: load after: $load_after"

# --- summary ----------------------------------------------------------------------
torch_pkg=$(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null || echo unknown)
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
"$py" - "$out" "$rounds" "$threads" "$log_interval" "$load_before" "$load_after" "$waited" \
      "$torch_pkg" "$cpu_model" "$(nproc)" "${train_cmd[*]}" "${torch_cmd[*]}" <<'EOF'
import json, statistics, sys

(out, rounds, threads, log_interval, load_before, load_after, waited, torch_pkg, cpu_model, nproc,
 train_cmd, torch_cmd) = sys.argv[1:]
rounds, threads, log_interval = int(rounds), int(threads), int(log_interval)

# (a) sgemm: median over repetitions, per benchmark (GFLOP/s); the peak is Square (1024^3).
with open(f"{out}/sgemm.json") as f:
    sg = json.load(f)
sgemm = {}
for b in sg["benchmarks"]:
    if b.get("aggregate_name") == "median":
        sgemm[b["run_name"]] = b["GFLOP/s"]
peak_name = next(n for n in sgemm if n.startswith("Square/"))
peak = sgemm[peak_name]

# (b) moetrain: per run, throughput over the intervals after the first
# (total tokens / total time of those intervals), then the median over runs.
runs = []
flops_per_token = 0.0  # GFLOP a token, from moetrain's own count (ModelConfig::train_flops_per_token)
for r in range(1, rounds + 1):
    recs = [json.loads(l) for l in open(f"{out}/metrics_{r}.jsonl") if l.strip()]
    later = [m for m in recs if m["step"] > log_interval]
    if not later:
        sys.exit(f"metrics_{r}.jsonl has no interval after the warm-up")
    toks = sum(m["global_batch_tokens"] * log_interval for m in later)
    secs = sum(m["global_batch_tokens"] * log_interval / m["tokens_per_s"] for m in later)
    tps = toks / secs
    flops_per_token = later[0]["gflops_per_s"] / later[0]["tokens_per_s"]
    runs.append({"tokens_per_s": tps, "gflops_per_s": tps * flops_per_token,
                 "interval_tokens_per_s": [m["tokens_per_s"] for m in recs],
                 "warmup_interval_skipped": True})
mt_tps = statistics.median(r["tokens_per_s"] for r in runs)
mt_gf = statistics.median(r["gflops_per_s"] for r in runs)

# (c) torch
torch_runs = [json.load(open(f"{out}/torch_{r}.json")) for r in range(1, rounds + 1)]
th_tps = statistics.median(t["tokens_per_s"] for t in torch_runs)

summary = {
    "machine": {"cpu": cpu_model, "nproc": int(nproc)},
    "threads": threads,
    "rounds": rounds,
    "load_before": load_before.strip(),
    "load_after": load_after.strip(),
    "load_wait_s": int(waited),
    "commands": {"moetrain": train_cmd, "torch": torch_cmd},
    "sgemm_gflops": sgemm,
    "sgemm_peak_gflops": peak,
    "moetrain": {"tokens_per_s": mt_tps, "gflops_per_s": mt_gf,
                 "train_gflop_per_token": flops_per_token, "runs": runs},
    "torch": {"tokens_per_s": th_tps, "version": torch_runs[0].get("torch"),
              "package": torch_pkg, "runs": torch_runs},
    "ratios": {"moetrain_gflops_over_sgemm_peak": mt_gf / peak,
               "moetrain_over_torch_tokens_per_s": mt_tps / th_tps},
}
with open(f"{out}/summary.json", "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

print()
print(f"Training throughput, configs/bench.toml, {threads} threads, median of {rounds} runs each")
print(f"  {'moetrain tokens/s':34s} {mt_tps:10.0f}   (runs: " +
      ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs) + ")")
print(f"  {'moetrain achieved GFLOP/s':34s} {mt_gf:10.1f}")
print(f"  {'sgemm peak GFLOP/s (1024^3)':34s} {peak:10.1f}")
print(f"  {'fraction of sgemm peak':34s} {mt_gf / peak:10.3f}")
print(f"  {'torch tokens/s':34s} {th_tps:10.0f}   (runs: " +
      ", ".join(f"{t['tokens_per_s']:.0f}" for t in torch_runs) + f"; torch {torch_runs[0].get('torch')})")
print(f"  {'ratio moetrain/torch':34s} {mt_tps / th_tps:10.2f}")
print(f"summary: {out}/summary.json")
EOF
