#!/usr/bin/env bash
# Long-context benchmark: one training step of the workstation model
# (configs/workstation-moe.toml) at growing sequence lengths, micro-batch 1,
# without and with full activation recompute.
#
#   scripts/bench_long_context.sh [THREADS]      THREADS defaults to nproc
#
# For each S in MT_BENCH_SEQ_LENGTHS (2048 8192 32768) and each recompute
# setting (none; full, uniform, 1 layer a group), one `moetrain train` of
# two steps (the first creates the products' primitives and is not timed):
#   - peak resident memory of the process (getrusage, ru_maxrss);
#   - `moetrain plan` of the same flags: its total for the rank (weights,
#     gradients, optimizer, activations, backward workspace) against the
#     measured peak less the process's own footprint (libraries, MPI,
#     oneDNN, the data index: what the planner does not model), measured in
#     the same run as the peak of a run at S = 64 less its plan;
#   - tokens/s of the second step (its metrics record);
#   - attention's share of the second step (--profile).
# Prints a table and writes bench_out/long_context.json.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_SEQ_LENGTHS (space-separated), MT_BENCH_MAX_LOAD and
# MT_BENCH_LOAD_WAIT_S as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_long_context.sh: error: $*" >&2; exit 1; }

threads="${1:-$(nproc)}"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$threads'"
build_dir="${MT_BUILD_DIR:-build}"
read -r -a seq_lengths <<< "${MT_BENCH_SEQ_LENGTHS:-2048 8192 32768}"
config=configs/workstation-moe.toml
out=bench_out
py=/usr/bin/python3

bench_build_moetrain "$build_dir"

# The config's two sources, text and code, from files on the machine.
mkdir -p "$out"
rm -f "$out"/long_context_*.log "$out"/long_context_*.jsonl "$out"/long_context_*.plan.json "$out"/long_context.json
bench_headers
"$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/lc_text" > /dev/null
"$bin" prepare-data --input "${headers[@]}" --output-prefix "$out/lc_code" > /dev/null

bench_wait_for_quiet_machine 300

declare -A recompute_flags=(
    [none]=""
    [full]="--recompute-granularity full --recompute-method uniform --recompute-num-layers 1"
)
names=()
# One measured run: name, sequence length, recompute setting.
run_case() {
    local name="$1" seq="$2" recompute="$3"
    names+=("$name")
    # shellcheck disable=SC2206  # a flag list
    local flags=(--config "$config" --data-path "text=$out/lc_text" "code=$out/lc_code"
                 --seq-length "$seq" --micro-batch-size 1 --global-batch-size 1 --train-iters 2
                 --lr-warmup-samples 0 ${recompute_flags[$recompute]})
    echo "bench: $name: $bin train ${flags[*]} --threads $threads --profile"
    "$bin" plan "${flags[@]}" --json > "$out/long_context_$name.plan.json" || die "moetrain plan failed for $name"
    # The peak resident memory of the child, in KiB, on the log's last line.
    "$py" - "$out/long_context_$name.log" "$bin" train "${flags[@]}" --threads "$threads" --profile \
          --log-interval 1 --save-interval 0 --metrics-file "$out/long_context_$name.jsonl" <<'EOF' \
        || { tail -20 "$out/long_context_$name.log" >&2; die "$name failed (log: $out/long_context_$name.log)"; }
import resource, subprocess, sys
log, cmd = sys.argv[1], sys.argv[2:]
with open(log, "w") as f:
    status = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    f.write(f"peak_rss_kib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
sys.exit(status)
EOF
    grep -E '^step|attention|^peak_rss' "$out/long_context_$name.log" | sed 's/^/    /'
}

run_case baseline 64 none
for seq in "${seq_lengths[@]}"; do
    for recompute in none full; do
        run_case "S${seq}_${recompute}" "$seq" "$recompute"
    done
done

cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
"$py" - "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" "${names[@]}" <<'EOF'
import json, re, sys

out, threads, cpu, load_before, load_after, *names = sys.argv[1:]
def peak_rss(name):
    log = open(f"{out}/long_context_{name}.log").read()
    return int(re.search(r"^peak_rss_kib (\d+)$", log, re.M).group(1)) * 1024

def plan(name):
    return json.load(open(f"{out}/long_context_{name}.plan.json"))["memory"]["largest"]

# What the process holds beyond the planner's tensors, from the S = 64 run.
footprint = peak_rss("baseline") - plan("baseline")["total_bytes"]
rows = []
for name in names[1:]:
    seq, recompute = re.fullmatch(r"S(\d+)_(\w+)", name).groups()
    log = open(f"{out}/long_context_{name}.log").read()
    rss = peak_rss(name)
    share = float(re.search(r"^\s+attention \(.*?\)\s+[\d.]+ s\s+([\d.]+)%", log, re.M).group(1)) / 100
    step_s = float(re.search(r"profile of rank 0 over \d+ steps \(([\d.]+) s a step\)", log).group(1))
    metrics = [json.loads(l) for l in open(f"{out}/long_context_{name}.jsonl") if l.strip()]
    p = plan(name)
    rows.append({"seq_length": int(seq), "recompute": recompute, "peak_rss_bytes": rss,
                 "plan_total_bytes": p["total_bytes"], "plan_activations_bytes": p["activations_bytes"],
                 "plan_workspace_bytes": p["workspace_bytes"],
                 "tensors_over_plan": (rss - footprint) / p["total_bytes"],
                 "tokens_per_s": metrics[-1]["tokens_per_s"], "step_seconds": step_s, "attention_share": share})
summary = {"machine": {"cpu": cpu}, "threads": int(threads), "load_before": load_before.strip(),
           "load_after": load_after.strip(), "process_footprint_bytes": footprint, "rows": rows}
with open(f"{out}/long_context.json", "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

print()
print(f"Long context, configs/workstation-moe.toml, micro-batch 1, {threads} threads")
print(f"  process footprint beyond the planned tensors (S = 64 run): {footprint / 2**20:.0f} MiB")
print(f"  {'S':>6s} {'recompute':>9s} {'peak RSS':>10s} {'plan':>10s} {'(RSS-fp)/plan':>13s} {'tokens/s':>9s} "
      f"{'step s':>7s} {'attention':>9s}")
for r in rows:
    print(f"  {r['seq_length']:6d} {r['recompute']:>9s} {r['peak_rss_bytes'] / 2**20:7.0f} MiB "
          f"{r['plan_total_bytes'] / 2**20:6.0f} MiB {r['tensors_over_plan']:13.2f} {r['tokens_per_s']:9.0f} "
          f"{r['step_seconds']:7.2f} {r['attention_share']:9.1%}")
print(f"summary: {out}/long_context.json")
EOF
