#!/usr/bin/env bash
# Context parallelism's memory: one step of a 64k-token sequence of a small
# dense model (2 layers, d 128, 4 heads of 32, MQA, documents of 50 to 400
# words) on one rank and over CP 4 ranks of this machine.
#
#   scripts/bench_context_parallel.sh
#
# For each: every rank's start-up memory line (one micro-batch's
# activations and the model's work space, every device buffer counted),
# the peak resident memory of the largest rank (getrusage of mpirun's
# children, scripts/bench_py/peak_rss.py), the step's loss, gradient norm
# and tokens/s. Then CP 4's ratios to CP 1. Writes
# bench_out/context_parallel.json.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_SEQ_LENGTH (65536), MT_BENCH_MAX_LOAD and
# MT_BENCH_LOAD_WAIT_S as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

seq="${MT_BENCH_SEQ_LENGTH:-65536}"
bench_positive MT_BENCH_SEQ_LENGTH "$seq"
bench_build "${MT_BUILD_DIR:-build}" moetrain

rm -f "$out"/context_parallel_*.log "$out"/context_parallel.json
# Documents of 50 to 400 words, a JSON line each, from a fixed seed.
"$py" - "$out/context_parallel_docs.jsonl" <<'EOF'
import json, random, sys
random.seed(1)
words = "the model routes each token to two experts and a small router learns which one fits best".split()
with open(sys.argv[1], "w") as f:
    for _ in range(3000):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(random.randint(50, 400)))}) + "\n")
EOF
"$bin" prepare-data --input "$out/context_parallel_docs.jsonl" --output-prefix "$out/context_parallel" > /dev/null

bench_wait_for_quiet_machine 300

flags=(--num-layers 2 --hidden-size 128 --num-attention-heads 4 --num-query-groups 1 --ffn-hidden-size 256
       --num-experts 1 --moe-router-topk 1 --seq-length "$seq" --micro-batch-size 1 --global-batch-size 1
       --data-path "$out/context_parallel_text_document" --train-iters 1 --log-interval 1 --lr-warmup-samples 0
       --threads 1 --reset-position-ids --reset-attention-mask --save-interval 0)
for cp in 1 4; do
    bench_mpirun "$cp"
    echo "bench: CP $cp: ${mpirun_cmd[*]} $bin train ${flags[*]} --cp $cp"
    "$py" scripts/bench_py/peak_rss.py "$out/context_parallel_cp$cp.log" "${mpirun_cmd[@]}" "$bin" train \
        "${flags[@]}" --cp "$cp" \
        || { tail -20 "$out/context_parallel_cp$cp.log" >&2; die "CP $cp failed (log: $out/context_parallel_cp$cp.log)"; }
    grep -aE '^memory rank|^step|^peak_rss' "$out/context_parallel_cp$cp.log" | sed 's/^/    /'
done

"$py" - "$out" "$seq" <<'EOF'
import re
import sys

sys.path.insert(0, "scripts/bench_py")
from bench_stats import write_json

out, seq = sys.argv[1], int(sys.argv[2])
runs = {}
for cp in (1, 4):
    with open(f"{out}/context_parallel_cp{cp}.log", errors="replace") as f:
        log = f.read()
    memory = [(int(a), int(w)) for a, w in
              re.findall(r"^memory rank .*activations (\d+) B a micro-batch, workspace (\d+) B", log, re.M)]
    step = re.search(r"^step .*\| loss ([\d.]+) .*grad norm ([\d.]+) .*\| ([\d.]+) tok/s", log, re.M)
    runs[cp] = {"activation_bytes": max(a for a, _ in memory), "workspace_bytes": max(w for _, w in memory),
                "peak_rss_bytes": int(re.search(r"^peak_rss_kib (\d+)$", log, re.M).group(1)) * 1024,
                "loss": float(step.group(1)), "grad_norm": float(step.group(2)),
                "tokens_per_s": float(step.group(3))}
ratios = {k: runs[4][k] / runs[1][k] for k in ("activation_bytes", "workspace_bytes", "peak_rss_bytes")}
write_json(f"{out}/context_parallel.json", {"seq_length": seq, "runs": runs, "cp4_over_cp1": ratios})
print(f"\nContext parallelism, one {seq}-token sequence, a dense 2-layer model with documents")
for cp, r in runs.items():
    print(f"  CP {cp}: activations {r['activation_bytes'] / 2**20:.1f} MiB a rank, workspace "
          f"{r['workspace_bytes'] / 2**20:.1f} MiB, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB, loss "
          f"{r['loss']}, grad norm {r['grad_norm']}, {r['tokens_per_s']:.0f} tokens/s")
print("  CP 4 / CP 1: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
print(f"summary: {out}/context_parallel.json")
EOF
