#!/usr/bin/env bash
# Training-throughput benchmark: moetrain in float32 and bf16 on
# configs/bench.toml against the machine's matrix-product peak in each
# precision and against PyTorch eager, all in one run.
#
#   scripts/bench_throughput.sh [THREADS]        THREADS defaults to nproc
#
# Steps, all with the same thread count:
#   1. build moetrain and bench_matmul_libraries (scripts/build.sh, build dir MT_BUILD_DIR=build);
#   2. make a token store from /usr/share/common-licenses + /usr/include/*.h;
#   3. bench_matmul_libraries: GFLOP/s of OpenBLAS and oneDNN on every product
#      of the bench step and a 2048^3 square, in float32 and bf16; the best in
#      each precision is that precision's peak;
#   4. MT_BENCH_ROUNDS (2) interleaved rounds of the five training runs:
#        moetrain float32, moetrain --bf16,
#        PyTorch float32 as installed,
#        PyTorch float32 tuned (OPENBLAS_NUM_THREADS=1: OpenBLAS does not
#          start its own threads beside PyTorch's),
#        PyTorch bf16 (torch.autocast, tuned likewise);
#      each moetrain run skips its first log interval as warm-up,
#      bench_torch.py runs as many measured steps after --warmup 1; the
#      median over rounds is reported.
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
    MT_BUILD_TARGETS="moetrain bench_matmul_libraries" bash scripts/build.sh "$build_dir" -DMOETRAIN_BUILD_BENCH=ON
fi
bin="$build_dir/moetrain"
bench_matmul="$build_dir/bench/bench_matmul_libraries"
[[ -x "$bin" ]] || die "no moetrain binary in $build_dir"
[[ -x "$bench_matmul" ]] || die "no $bench_matmul (configure with -DMOETRAIN_BUILD_BENCH=ON)"

# --- token store ----------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/metrics_*.jsonl "$out"/train_*.log "$out"/torch_*.json "$out"/torch_*.log \
      "$out"/matmul.json "$out"/summary.json
bench_headers
echo "bench: token store from /usr/share/common-licenses + ${#headers[@]} headers of /usr/include"
"$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$out/corpus"

# Other processes on the machine slow every figure below: wait (bounded) for
# the load, our own build's included, to settle, then record it.
bench_wait_for_quiet_machine 300

# --- (a) matrix-product peaks ------------------------------------------------------
echo "bench: matrix products ($bench_matmul --threads $threads --reps 10)"
"$bench_matmul" --threads "$threads" --reps 10 --json "$out/matmul.json" | sed 's/^/    /'

# --- (b) interleaved training runs ---------------------------------------------------
train_cmd=("$bin" train --config "$config" --data-path "$out/corpus" --threads "$threads"
    --train-iters "$steps" --log-interval "$log_interval")
torch_cmd=("$py" scripts/pytorch_reference/bench_torch.py --threads "$threads" --steps "$torch_steps" --warmup 1)
# name, environment, command
runs=(
    "moetrain_fp32||${train_cmd[*]}"
    "moetrain_bf16||${train_cmd[*]} --bf16"
    "torch_fp32||${torch_cmd[*]}"
    "torch_fp32_tuned|OPENBLAS_NUM_THREADS=1|${torch_cmd[*]}"
    "torch_bf16_tuned|OPENBLAS_NUM_THREADS=1|${torch_cmd[*]} --bf16"
)
for (( r = 1; r <= rounds; r++ )); do
    for run in "${runs[@]}"; do
        IFS='|' read -r name env_vars cmd <<< "$run"
        log="$out/${name}_$r.log"
        echo "bench: round $r/$rounds: $name: ${env_vars:+$env_vars }$cmd"
        if [[ "$name" == moetrain_* ]]; then
            # shellcheck disable=SC2086  # cmd is a word list built above
            env $env_vars $cmd --metrics-file "$out/metrics_${name}_$r.jsonl" > "$log" 2>&1 \
                || { tail -20 "$log" >&2; die "$name run $r failed (log: $log)"; }
            grep '^step' "$log" | sed 's/^/    /'
        else
            # shellcheck disable=SC2086
            env $env_vars $cmd > "$log" 2>&1 || { tail -20 "$log" >&2; die "$name run $r failed (log: $log)"; }
            tail -n 1 "$log" > "$out/${name}_$r.json"
            sed 's/^/    /' "$out/${name}_$r.json"
        fi
    done
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

# (a) the best product of each precision, over shapes and libraries.
matmul = json.load(open(f"{out}/matmul.json"))
peak = {}
for precision in ("fp32", "bf16"):
    best = max((row for row in matmul if row["precision"] == precision), key=lambda row: row["gflops"])
    peak[precision] = {"gflops": best["gflops"], "shape": best["shape"], "library": best["library"]}

# (b) moetrain: per run, throughput over the intervals after the first
# (total tokens / total time of those intervals), then the median over runs.
def moetrain(name):
    runs, flops_per_token = [], 0.0
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{out}/metrics_{name}_{r}.jsonl") if l.strip()]
        later = [m for m in recs if m["step"] > log_interval]
        if not later:
            sys.exit(f"metrics_{name}_{r}.jsonl has no interval after the warm-up")
        toks = sum(m["global_batch_tokens"] * log_interval for m in later)
        secs = sum(m["global_batch_tokens"] * log_interval / m["tokens_per_s"] for m in later)
        flops_per_token = later[0]["gflops_per_s"] / later[0]["tokens_per_s"]
        runs.append({"tokens_per_s": toks / secs, "interval_tokens_per_s": [m["tokens_per_s"] for m in recs]})
    tps = statistics.median(r["tokens_per_s"] for r in runs)
    return {"tokens_per_s": tps, "gflops_per_s": tps * flops_per_token, "train_gflop_per_token": flops_per_token,
            "runs": runs}

def torch_run(name):
    runs = [json.load(open(f"{out}/{name}_{r}.json")) for r in range(1, rounds + 1)]
    return {"tokens_per_s": statistics.median(t["tokens_per_s"] for t in runs), "runs": runs}

results = {"moetrain_fp32": moetrain("moetrain_fp32"), "moetrain_bf16": moetrain("moetrain_bf16")}
for name in ("torch_fp32", "torch_fp32_tuned", "torch_bf16_tuned"):
    results[name] = torch_run(name)
fastest_torch = max(("torch_fp32", "torch_fp32_tuned", "torch_bf16_tuned"), key=lambda n: results[n]["tokens_per_s"])
torch_best = results[fastest_torch]["tokens_per_s"]
ratios = {}
for precision in ("fp32", "bf16"):
    m = results[f"moetrain_{precision}"]
    ratios[f"moetrain_{precision}_over_fastest_torch"] = m["tokens_per_s"] / torch_best
    ratios[f"moetrain_{precision}_gflops_over_{precision}_peak"] = m["gflops_per_s"] / peak[precision]["gflops"]

summary = {
    "machine": {"cpu": cpu_model, "nproc": int(nproc)},
    "threads": threads,
    "rounds": rounds,
    "load_before": load_before.strip(),
    "load_after": load_after.strip(),
    "load_wait_s": int(waited),
    "commands": {"moetrain": train_cmd, "torch": torch_cmd},
    "matmul_peak_gflops": peak,
    "results": results,
    "fastest_torch": fastest_torch,
    "torch": {"version": results["torch_fp32"]["runs"][0].get("torch"), "package": torch_pkg},
    "ratios": ratios,
}
with open(f"{out}/summary.json", "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

print()
print(f"Training throughput, configs/bench.toml, {threads} threads, median of {rounds} runs each")
print(f"  {'run':28s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {'x fastest torch':>16s}")
for name, r in results.items():
    precision = "bf16" if "bf16" in name else "fp32"
    gf = r.get("gflops_per_s")
    print(f"  {name:28s} {r['tokens_per_s']:9.0f} {gf if gf else float('nan'):8.1f} "
          f"{(gf / peak[precision]['gflops']) if gf else float('nan'):8.2f} {r['tokens_per_s'] / torch_best:16.2f}")
for precision in ("fp32", "bf16"):
    p = peak[precision]
    print(f"  matrix-product peak, {precision}: {p['gflops']:.1f} GFLOP/s ({p['library']}, {p['shape']})")
print(f"  fastest PyTorch variant: {fastest_torch} (torch {summary['torch']['version']})")
print(f"summary: {out}/summary.json")
EOF
