"""The summary of scripts/bench_data_parallel.sh: writes OUT/dp_summary.json
and prints the ZeRO-1 table: step time at DP=1 and DP=2 against the ideal,
the reduce-scatter bytes hidden by the bucketed overlap and the wait it
saves, and the bus bandwidth of GradSync's collectives against plain MPI
calls, medians over the rounds.

    data_parallel_summary.py OUT ROUNDS LOG_INTERVAL LOAD_BEFORE LOAD_AFTER NPROC
        CMD_DP1 CMD_DP2 CMD_DP2_ONE_BUCKET CMD_GRAD_SYNC

Reads, for each round R, OUT/dp_{dp1,dp2,dp2_one_bucket}_R.jsonl and
OUT/dp_grad_sync_R.json.
"""

import sys

from bench_stats import after_warmup, median_of, medians, per_round, read_json, write_json

TRAIN_RUNS = ("dp1", "dp2", "dp2_one_bucket")
COLLECTIVES = ("grad_sync_reduce_scatter", "grad_sync_all_gather", "plain_reduce_scatter", "plain_all_gather")


def run(out, name, r, log_interval):
    """A run's figures a step over the intervals after the first."""
    _, later = after_warmup(f"{out}/dp_{name}_{r}.jsonl", log_interval)
    steps = log_interval * len(later)
    secs = sum(m["interval_s"] for m in later)
    rs_bytes = sum(m["dp_reduce_scatter_bytes"] for m in later)
    return {"step_s": secs / steps,
            "tokens_per_s": sum(m["global_batch_tokens"] * log_interval for m in later) / secs,
            "exposed_s_per_step": sum(m["dp_exposed_s"] for m in later) / steps,
            "all_gather_s_per_step": sum(m["dp_allgather_s"] for m in later) / steps,
            "all_gather_bytes_per_step": sum(m["dp_allgather_bytes"] for m in later) / steps,
            "reduce_scatter_bytes_per_step": rs_bytes / steps,
            "hidden_bytes_share": sum(m["dp_hidden_bytes"] for m in later) / rs_bytes if rs_bytes else 0.0}


def print_table(out, rounds, s):
    m, gs, coll = s["medians"], s["grad_sync"], s["collectives"]
    step1, step2 = m["dp1"]["step_s"], m["dp2"]["step_s"]
    ideal2 = step1 / 2
    exposed, exposed_one = m["dp2"]["exposed_s_per_step"], m["dp2_one_bucket"]["exposed_s_per_step"]
    print()
    print(f"ZeRO-1, configs/bench.toml, 1 thread a rank, median of {rounds} rounds (first interval skipped)")
    print(f"  DP=1 step {step1:.4f} s, {m['dp1']['tokens_per_s']:.0f} tok/s")
    print(f"  DP=2 step {step2:.4f} s, {m['dp2']['tokens_per_s']:.0f} tok/s; ideal {ideal2:.4f} s; "
          f"step / ideal {step2 / ideal2:.3f} (scaling efficiency {ideal2 / step2:.3f})")
    print(f"  reduce-scatter bytes complete before the backward pass ended: {m['dp2']['hidden_bytes_share']:.3f} "
          f"with {gs[0]['buckets']} buckets, {m['dp2_one_bucket']['hidden_bytes_share']:.3f} with one")
    print(f"  reduce-scatter wait after backward: {exposed * 1e3:.2f} ms/step with {gs[0]['buckets']} buckets, "
          f"{exposed_one * 1e3:.2f} ms/step with one bucket -> wait saved {s['wait_saved_share']:.3f}")
    print(f"  all-gather in the run: {m['dp2']['all_gather_s_per_step'] * 1e3:.2f} ms/step, "
          f"busbw {s['in_run_all_gather_busbw_GBps']:.3f} GB/s")
    for k, v in coll.items():
        print(f"  {k:28s} {v['median_s'] * 1e3:8.2f} ms  busbw {v['busbw_GBps']:.3f} GB/s")
    print(f"  GradSync / plain busbw: reduce-scatter "
          f"{coll['grad_sync_reduce_scatter']['busbw_GBps'] / coll['plain_reduce_scatter']['busbw_GBps']:.2f}, "
          f"all-gather {coll['grad_sync_all_gather']['busbw_GBps'] / coll['plain_all_gather']['busbw_GBps']:.2f}")
    print(f"summary: {out}/dp_summary.json")


def main():
    out, rounds, log_interval, load_before, load_after, nproc, c1, c2, c3, cgs = sys.argv[1:]
    rounds, log_interval = int(rounds), int(log_interval)
    runs = {n: per_round(rounds, lambda r, n=n: run(out, n, r, log_interval)) for n in TRAIN_RUNS}
    gs = per_round(rounds, lambda r: read_json(f"{out}/dp_grad_sync_{r}.json"))
    if not all(g["sums_ok"] for g in gs):
        sys.exit("bench_grad_sync: wrong sums")
    m = {n: medians(v) for n, v in runs.items()}
    step1, step2 = m["dp1"]["step_s"], m["dp2"]["step_s"]
    ideal2 = step1 / 2
    exposed, exposed_one = m["dp2"]["exposed_s_per_step"], m["dp2_one_bucket"]["exposed_s_per_step"]
    coll = {k: {"median_s": median_of([g[k] for g in gs], "median_s"),
                "busbw_GBps": median_of([g[k] for g in gs], "busbw_GBps")} for k in COLLECTIVES}
    summary = {
        "nproc": int(nproc), "rounds": rounds, "load_before": load_before, "load_after": load_after,
        "commands": {"dp1": c1, "dp2": c2, "dp2_one_bucket": c3, "grad_sync": cgs},
        "medians": m, "runs": runs, "grad_sync": gs, "collectives": coll,
        "buckets": gs[0]["buckets"], "count": gs[0]["count"],
        "dp2_step_over_ideal": step2 / ideal2,
        "scaling_efficiency": ideal2 / step2,
        "wait_saved_share": 1 - exposed / exposed_one if exposed_one > 0 else None,
        "hidden_bytes_share": m["dp2"]["hidden_bytes_share"],
        "in_run_all_gather_busbw_GBps": m["dp2"]["all_gather_bytes_per_step"] / m["dp2"]["all_gather_s_per_step"]
        * 0.5 / 1e9,
    }
    write_json(f"{out}/dp_summary.json", summary)
    print_table(out, rounds, summary)


if __name__ == "__main__":
    main()
