#!/usr/bin/env bash
# How long an asynchronous save (--async-save) stalls the step loop, against
# a synchronous save of the same checkpoint, in the same session
# (docs/benchmarks.md, "Asynchronous saves").
#
#   scripts/bench_async_save.sh          # summary in bench_out/async_save_summary.json
#
# Trains configs/workstation-moe.toml (9.2 M parameters, a 110 MB
# checkpoint) for 12 steps at 1 rank, three times: no saves, a save every 2
# steps, and the same with --async-save. A synchronous save stalls the loop
# for its whole time ("saved checkpoint ... in X s"); an asynchronous one for
# its snapshot plus whatever the next save or the end waits for the file
# ("the snapshot took X s", "waited Y s for it"; the end of the run's wait,
# once a run, is reported apart). The runs' throughput over the 12 steps
# (the saves of steps 2 to 10 inside) shows what the saves cost the steps,
# the background writing included.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1, MT_BENCH_MAX_LOAD (0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

build_dir="${MT_BUILD_DIR:-build}"
out=bench_out
mkdir -p "$out"
[[ "${MT_BENCH_SKIP_BUILD:-0}" == 1 ]] || MT_BUILD_TARGETS="moetrain" bash scripts/build.sh "$build_dir"
bin="$build_dir/moetrain"
# The stores bench_checkpoint.sh makes: the config's blend of text and code.
bench_headers
[[ -s "$out/ckpt_text.bin" ]] || "$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/ckpt_text" >/dev/null
[[ -s "$out/ckpt_code.bin" ]] || "$bin" prepare-data --input "${headers[@]}" --output-prefix "$out/ckpt_code" >/dev/null

bench_wait_for_quiet_machine 300
run() {  # NAME FLAGS...: the log in $out/async_NAME.log
    local name=$1; shift
    rm -rf "$out/async_$name"
    "$bin" train --config configs/workstation-moe.toml --data-path "text=$out/ckpt_text" "code=$out/ckpt_code" --train-iters 12 \
        --log-interval 12 --lr-decay-samples 100000 "$@" > "$out/async_$name.log" 2>&1
}
for round in 1 2 3; do
    run "none_$round" --save-interval 0
    run "sync_$round" --save "$out/async_sync_$round" --save-interval 2
    run "async_$round" --save "$out/async_async_$round" --save-interval 2 --async-save
done

/usr/bin/python3 - "$out" <<'PY'
import json, re, statistics, sys
out = sys.argv[1]
def log(name): return open(f"{out}/async_{name}.log").read()
rows = {"none": [], "sync": [], "async": []}
stall = {"sync": [], "async": []}
end_wait = []
for r in (1, 2, 3):
    for kind in rows:
        rows[kind].append(float(re.findall(r"\| (\d+) tok/s", log(f"{kind}_{r}"))[-1]))
    sync = [float(x) for x in re.findall(r"saved checkpoint \S+ in ([0-9.]+) s", log(f"sync_{r}"))]
    snap = [float(x) for x in re.findall(r"the snapshot took ([0-9.]+) s", log(f"async_{r}"))]
    waited = [float(x) for x in re.findall(r"waited ([0-9.]+) s for it", log(f"async_{r}"))]
    stall["sync"].append(sum(sync) / len(sync))
    # The last wait is the end of the run's, once a run: reported apart.
    stall["async"].append((sum(snap) + sum(waited[:-1])) / len(snap))
    end_wait.append(waited[-1])
summary = {
    "stall_per_save_s": {k: statistics.median(v) for k, v in stall.items()},
    "stall_ratio": statistics.median(stall["async"]) / statistics.median(stall["sync"]),
    "async_end_of_run_wait_s": statistics.median(end_wait),
    "tokens_per_s": {k: statistics.median(v) for k, v in rows.items()},
    "rounds": {"stall": stall, "tokens_per_s": rows},
}
json.dump(summary, open(f"{out}/async_save_summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
