#!/usr/bin/env bash
# What gradients in bf16 cost in loss: the workstation run
# (configs/workstation-moe.toml, 300 steps) in bf16 on two replicas, with
# float32 gradients (the default) and with --grad-reduce-in-bf16.
#
#   scripts/bench_bf16_gradients.sh [THREADS]   THREADS a rank, default nproc / 2
#
# For each run: the mean loss of the last five logged steps (one step's loss
# swings with its batch), rank 0's gradient bytes (its start-up memory line),
# tokens/s and the ZeRO-1 reduce-scatter bytes of the last interval; then
# the relative difference of the final losses, which docs/design.md section
# 8 bounds by 1%. Writes bench_out/bf16_gradients.json.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_STEPS (300), MT_BENCH_MAX_LOAD and MT_BENCH_LOAD_WAIT_S as
# in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads_per_rank 2 "${1:-}"
steps="${MT_BENCH_STEPS:-300}"
bench_positive MT_BENCH_STEPS "$steps"
config=configs/workstation-moe.toml

bench_build "${MT_BUILD_DIR:-build}" moetrain
bench_mpirun 2

rm -f "$out"/bf16_gradients_*.log "$out"/bf16_gradients_*.jsonl "$out"/bf16_gradients.json
bench_text_code_stores "$out/bf16g"

bench_wait_for_quiet_machine 300

for grads in fp32 bf16; do
    flags=(--config "$config" --data-path "text=$out/bf16g_text" "code=$out/bf16g_code" --bf16
           --train-iters "$steps" --save-interval 0 --threads "$threads"
           --metrics-file "$out/bf16_gradients_$grads.jsonl")
    [[ "$grads" == fp32 ]] || flags+=(--grad-reduce-in-bf16)
    echo "bench: $grads gradients: ${mpirun_cmd[*]} $bin train ${flags[*]}"
    bench_logged "$out/bf16_gradients_$grads.log" "the $grads run" "${mpirun_cmd[@]}" "$bin" train "${flags[@]}"
    grep -E '^memory rank 0' "$out/bf16_gradients_$grads.log" | sed 's/^/    /'
done

bench_cpu_model
"$py" - "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" <<'EOF'
import re
import sys

sys.path.insert(0, "scripts/bench_py")
from bench_stats import read_jsonl, write_json

out, threads, cpu, load_before, load_after = sys.argv[1:]
runs = {}
for grads in ("fp32", "bf16"):
    records = read_jsonl(f"{out}/bf16_gradients_{grads}.jsonl")
    with open(f"{out}/bf16_gradients_{grads}.log") as f:
        gradient_bytes = int(re.search(r"^memory rank 0 .* gradients (\d+) B", f.read(), re.M).group(1))
    runs[grads] = {"final_loss": sum(r["loss"] for r in records[-5:]) / 5, "steps": records[-1]["step"],
                   "gradient_bytes": gradient_bytes, "tokens_per_s": records[-1]["tokens_per_s"],
                   "dp_reduce_scatter_bytes": records[-1]["dp_reduce_scatter_bytes"]}
difference = runs["bf16"]["final_loss"] / runs["fp32"]["final_loss"] - 1
write_json(f"{out}/bf16_gradients.json", {"machine": {"cpu": cpu}, "threads": int(threads),
                                          "load_before": load_before.strip(), "load_after": load_after.strip(),
                                          "runs": runs, "relative_loss_difference": difference})
print(f"\nbf16 gradients, configs/workstation-moe.toml in bf16 on 2 replicas, {threads} threads a rank")
for grads, r in runs.items():
    print(f"  {grads} gradients: final loss {r['final_loss']:.4f} (mean of the last 5 logged of {r['steps']} steps), "
          f"gradients {r['gradient_bytes'] / 2**20:.2f} MiB on rank 0, {r['tokens_per_s']:.0f} tokens/s, "
          f"reduce-scatter {r['dp_reduce_scatter_bytes'] / 2**20:.1f} MiB an interval")
print(f"  bf16 / fp32 final loss - 1: {difference:+.2%} (bound: 1%)")
print(f"summary: {out}/bf16_gradients.json")
EOF
