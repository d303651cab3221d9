#!/usr/bin/env bash
# Generation benchmark: the workstation model (configs/workstation-moe.toml,
# multi-query attention, 8 experts top-2, context 256) after a few training
# steps, continuing prompts of mixed lengths (8 to 160 bytes) with mixed
# output lengths (8 to 96 tokens), greedily, on one rank:
#   - for each B of MAX_BATCHES, continuous batching of up to B sequences
#     (a finished sequence's slot takes the next prompt at the next step)
#     and static batching of B (the next prompts wait for the whole batch);
#   - the cache with one sequence at a time;
#   - no cache: each token from the full forward pass over its prefix.
# Each is timed by generate itself ("generated N tokens ... in S s"), in the
# same run, after one untimed warm-up; the table gives generated tokens/s,
# the ratios to static batching of the same B and to no cache, and checks
# that every mode produced the same completions. Writes
# bench_out/generate.json.
#
#   scripts/bench_generate.sh [THREADS] [MAX_BATCHES]    defaults: nproc, "4 16"
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_PROMPTS (128), MT_BENCH_MAX_LOAD and MT_BENCH_LOAD_WAIT_S
# as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

die() { echo "bench_generate.sh: error: $*" >&2; exit 1; }

threads="${1:-$(nproc)}"
read -r -a batches <<< "${2:-4 16}"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$threads'"
for b in "${batches[@]}"; do
    [[ "$b" =~ ^[1-9][0-9]*$ ]] || die "MAX_BATCHES must be positive integers, got '$b'"
done
prompts="${MT_BENCH_PROMPTS:-128}"
build_dir="${MT_BUILD_DIR:-build}"
config=configs/workstation-moe.toml
out=bench_out
py=/usr/bin/python3

bench_build_moetrain "$build_dir"

mkdir -p "$out"
rm -rf "$out"/generate_* "$out/generate.json"
bench_headers
"$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/generate_text" > /dev/null
"$bin" prepare-data --input "${headers[@]}" --output-prefix "$out/generate_code" > /dev/null
echo "bench: training the model for 20 steps"
"$bin" train --config "$config" --data-path "text=$out/generate_text" "code=$out/generate_code" --train-iters 20 \
    --lr-warmup-samples 16 --save "$out/generate_ckpt" --save-interval 20 --threads "$threads" \
    > "$out/generate_train.log" 2>&1 || { tail -20 "$out/generate_train.log" >&2; die "training failed"; }

# Prompts: pieces of the licenses' text, of mixed lengths, each with its own output length.
"$py" - "$prompts" > "$out/generate_prompts.jsonl" <<'PY'
import glob, json, random, sys
rng = random.Random(7)
text = " ".join(open(f, errors="replace").read() for f in sorted(glob.glob("/usr/share/common-licenses/*"))[:4])
text = " ".join(text.split())
for _ in range(int(sys.argv[1])):
    n = rng.randint(8, 160)
    at = rng.randrange(0, len(text) - n)
    print(json.dumps({"prompt": text[at:at + n], "max_new_tokens": rng.randint(8, 96)}))
PY

bench_wait_for_quiet_machine 300

declare -A mode_flags=([one_at_a_time]="--max-batch 1" [no_cache]="--no-kv-cache")
modes=()
for b in "${batches[@]}"; do
    mode_flags[continuous_$b]="--max-batch $b"
    mode_flags[static_$b]="--max-batch $b --batching static"
    modes+=("continuous_$b" "static_$b")
done
modes+=(one_at_a_time no_cache)
run_mode() {
    local name="$1" log="$2"
    # shellcheck disable=SC2086  # a flag list
    "$bin" generate --load "$out/generate_ckpt" --prompts "$out/generate_prompts.jsonl" --temperature 0 \
        --threads "$threads" ${mode_flags[$name]} > "$log" 2>&1 \
        || { tail -20 "$log" >&2; die "generate ($name) failed (log: $log)"; }
    grep '^generated' "$log" | sed "s/^/    $name: /"
}
echo "bench: warm-up"
run_mode "${modes[0]}" "$out/generate_warmup.log" > /dev/null
for m in "${modes[@]}"; do run_mode "$m" "$out/generate_$m.log"; done

cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
"$py" - "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" "${modes[@]}" <<'PY'
import json, re, sys

out, threads, cpu, load_before, load_after, *modes = sys.argv[1:]
rows, completions = {}, {}
for m in modes:
    log = open(f"{out}/generate_{m}.log").read()
    g = re.search(r"^generated (\d+) tokens for (\d+) prompts in (\d+) steps, ([\d.]+) s: ([\d.]+) tokens/s", log, re.M)
    rows[m] = {"tokens": int(g[1]), "prompts": int(g[2]), "steps": int(g[3]), "seconds": float(g[4]),
               "tokens_per_s": float(g[5])}
    completions[m] = [json.loads(l)["completion"] for l in log.splitlines() if l.startswith('{"completion"')]
for m in modes:
    batch = m.split("_")[-1]
    static = rows.get(f"static_{batch}")
    rows[m]["vs_static"] = rows[m]["tokens_per_s"] / static["tokens_per_s"] if static else None
    rows[m]["vs_no_cache"] = rows[m]["tokens_per_s"] / rows["no_cache"]["tokens_per_s"]
    rows[m]["same_completions"] = sum(a == b for a, b in zip(completions[m], completions["no_cache"]))
summary = {"machine": {"cpu": cpu}, "threads": int(threads),
           "load_before": load_before.strip(), "load_after": load_after.strip(), "modes": rows}
with open(f"{out}/generate.json", "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
n = rows["no_cache"]["prompts"]
print()
print(f"Generation, configs/workstation-moe.toml after 20 steps, {n} prompts, greedy, {threads} threads")
print(f"  {'mode':>14s} {'tokens':>7s} {'steps':>6s} {'seconds':>8s} {'tokens/s':>9s} {'/static':>8s} "
      f"{'/no cache':>9s} {'same':>6s}")
for m in modes:
    r = rows[m]
    print(f"  {m:>14s} {r['tokens']:7d} {r['steps']:6d} {r['seconds']:8.2f} {r['tokens_per_s']:9.1f} "
          f"{'' if r['vs_static'] is None else format(r['vs_static'], '.2f'):>8s} {r['vs_no_cache']:9.2f} {r['same_completions']:3d}/{n}")
print(f"summary: {out}/generate.json")
PY
