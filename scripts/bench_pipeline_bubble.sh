#!/usr/bin/env bash
# Pipeline bubble: each stage's measured idle share of the step (time blocked
# waiting for a neighbour's activations or gradients, as `train` logs it in
# "pipeline_idle") against the ideal 1F1B bubble (PP - 1) / (m + PP - 1), for
# PP = 2, 4, 8 and m micro-batches a step.
#
#   scripts/bench_pipeline_bubble.sh            results in bench_out/bubble_summary.json
#
# One thread a rank. With more ranks than cores (8 ranks on a 2-core
# workstation) ranks also wait for a core, which the idle share counts too.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${MT_BUILD_DIR:-build}"
out=bench_out
mkdir -p "$out"
if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    MT_BUILD_TARGETS=moetrain bash scripts/build.sh "$build_dir"
fi
bin="$build_dir/moetrain"
[[ -s "$out/bubble_corpus.bin" ]] || "$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/bubble_corpus"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# 8 layers of the bench model's width: 4, 2 or 1 a stage; micro-batches of 1.
model="--num-layers 8 --hidden-size 256 --num-attention-heads 8 --num-query-groups 1 --ffn-hidden-size 512
       --num-experts 8 --moe-router-topk 2 --seq-length 256 --micro-batch-size 1 --lr-warmup-samples 0
       --threads 1 --train-iters 12 --log-interval 4"
echo "load before: $(uptime)"
for pp in 2 4 8; do
    for m in 4 8 16; do
        f="$out/bubble_pp${pp}_m${m}.jsonl"
        rm -f "$f"
        # shellcheck disable=SC2086
        mpirun -np "$pp" --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none \
            "$bin" train $model --pp "$pp" --global-batch-size "$m" --data-path "$out/bubble_corpus" \
            --metrics-file "$f" > "$out/bubble_pp${pp}_m${m}.log" 2>&1
        echo "PP=$pp m=$m done"
    done
done
echo "load after: $(uptime)"

/usr/bin/python3 - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
rows = []
for pp in (2, 4, 8):
    for m in (4, 8, 16):
        recs = [json.loads(l) for l in open(f"{out}/bubble_pp{pp}_m{m}.jsonl")]
        recs = recs[1:]  # the first interval is warm-up
        idle = [sum(r["pipeline_idle"][s] for r in recs) / len(recs) for s in range(pp)]
        ideal = (pp - 1) / (m + pp - 1)
        rows.append({"pp": pp, "m": m, "ideal": ideal, "idle_per_stage": idle,
                     "idle_mean": sum(idle) / pp, "tokens_per_s": sum(r["tokens_per_s"] for r in recs) / len(recs)})
print(f"{'PP':>3} {'m':>3} {'ideal':>7} {'measured mean':>14}  per stage")
for r in rows:
    print(f"{r['pp']:>3} {r['m']:>3} {r['ideal']:>7.3f} {r['idle_mean']:>14.3f}  " +
          " ".join(f"{x:.2f}" for x in r["idle_per_stage"]))
json.dump(rows, open(f"{out}/bubble_summary.json", "w"), indent=2)
PY
