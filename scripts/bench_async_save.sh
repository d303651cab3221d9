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
# The summary: scripts/bench_py/async_save_summary.py.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1, MT_BENCH_MAX_LOAD (0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_build "${MT_BUILD_DIR:-build}" moetrain
# The stores bench_checkpoint.sh makes: the config's blend of text and code.
[[ -s "$out/ckpt_text.bin" && -s "$out/ckpt_code.bin" ]] || bench_text_code_stores "$out/ckpt"

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

"$py" scripts/bench_py/async_save_summary.py "$out"
