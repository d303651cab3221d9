"""The summary of scripts/bench_tensor_parallel.sh: writes OUT/tp_summary.json
and prints the table of tokens/s at TP=1 and TP=2, the TP=2 run's all-reduce
time a step against plain MPI_Allreduce calls of the same sizes (warm and
cold), and the per-size figures, medians over the rounds.

    tensor_parallel_summary.py OUT ROUNDS LOG_INTERVAL LOAD_BEFORE LOAD_AFTER WAITED
        CPU_MODEL NPROC CMD_TP1_T2 CMD_TP1_T1 CMD_TP2 CMD_ALLREDUCE CMD_ALLREDUCE_COLD

Reads OUT/tp_allreduce_plan.json and, for each round R,
OUT/tp_metrics_{tp1_t2,tp1_t1,tp2}_R.jsonl and OUT/tp_allreduce_{warm,cold}_R.json.
"""

import sys

from bench_stats import after_warmup, machine_load, median, median_of, per_round, read_json, write_json

TRAIN_RUNS = ("tp1_t2", "tp1_t1", "tp2")


def train_run(out, name, r, log_interval):
    """Throughput and TP all-reduce time over the intervals after the first."""
    recs, later = after_warmup(f"{out}/tp_metrics_{name}_{r}.jsonl", log_interval)
    steps = log_interval * len(later)
    secs = sum(m["interval_s"] for m in later)
    toks = sum(m["global_batch_tokens"] * log_interval for m in later)
    ar_s = sum(m.get("tp_allreduce_s", 0.0) for m in later)
    ar_b = sum(m.get("tp_allreduce_bytes", 0.0) for m in later)
    return {"tokens_per_s": toks / secs, "step_s": secs / steps,
            "tp_allreduce_s_per_step": ar_s / steps, "tp_allreduce_bytes_per_step": ar_b / steps,
            "tp_allreduce_share": ar_s / secs,
            "interval_tokens_per_s": [m["tokens_per_s"] for m in recs],
            "interval_tp_allreduce_s": [m.get("tp_allreduce_s", 0.0) for m in recs]}


def plain_run(out, kind, r, calls):
    """Plain MPI_Allreduce: the sum over sizes of calls a step x median time."""
    res = read_json(f"{out}/tp_allreduce_{kind}_{r}.json")
    by_count = {x["count"]: x for x in res["results"]}
    if not all(x["sum_ok"] for x in res["results"]):
        sys.exit(f"tp_allreduce_{kind}_{r}.json: wrong sums")
    step_s = sum(n * by_count[c]["median_s"] for c, n in calls.items())
    return {"plain_s_per_step": step_s, "flush_mib": res["flush_mib"], "results": res["results"], "mpi": res["mpi"]}


def per_size(runs, count, key):
    """The median over rounds of one size's figure."""
    return median(next(x[key] for x in a["results"] if x["count"] == count) for a in runs)


def joined(values, fmt):
    return ", ".join(fmt.format(v) for v in values)


def print_table(out, rounds, runs, tps, a, calls, plan_bytes):
    """a: the summary's tp2_allreduce."""
    measured, plain, plain_cold = a["measured_s_per_step"], a["plain_mpi_s_per_step"], a["plain_cold_mpi_s_per_step"]
    ar_runs, cold_runs = a["plain_runs"], a["plain_cold_runs"]
    meas_bytes = a["measured_bytes_per_step"]

    def runs_of(n, key="tokens_per_s", fmt="{:.0f}"):
        return joined((x[key] for x in runs[n]), fmt)
    print()
    print(f"Tensor parallelism, configs/bench.toml, median of {rounds} rounds (first interval skipped)")
    print(f"  {'TP=1, 1 rank x 2 threads, tokens/s':44s} {tps['tp1_t2']:10.0f}   (runs: {runs_of('tp1_t2')})")
    print(f"  {'TP=1, 1 rank x 1 thread,  tokens/s':44s} {tps['tp1_t1']:10.0f}   (runs: {runs_of('tp1_t1')})")
    print(f"  {'TP=2, 2 ranks x 1 thread, tokens/s':44s} {tps['tp2']:10.0f}   (runs: {runs_of('tp2')})")
    print(f"  {'ratio TP2 / TP1 (2 threads)':44s} {tps['tp2'] / tps['tp1_t2']:10.3f}")
    print(f"  {'ratio TP2 / TP1 (1 thread)':44s} {tps['tp2'] / tps['tp1_t1']:10.3f}")
    print(f"  {'TP=2 step time, s':44s} {median_of(runs['tp2'], 'step_s'):10.4f}")
    print(f"  {'TP=2 all-reduce time per step (rank 0), s':44s} {measured:10.4f}   "
          f"(runs: {runs_of('tp2', 'tp_allreduce_s_per_step', '{:.4f}')})")
    print(f"  {'share of step time in TP all-reduces':44s} {a['share_of_step_time']:10.3f}")
    print(f"  {'all-reduce bytes per step, measured / plan':44s} {meas_bytes:10.0f} / {plan_bytes}")
    if abs(meas_bytes - plan_bytes) > 0.5:
        print(f"  WARNING: the run all-reduced {meas_bytes:.0f} bytes a step, the plan {plan_bytes}: "
              "the plain figure does not cover the same calls")
    print(f"  {'plain MPI_Allreduce, same calls, s per step':44s} {plain:10.4f}   "
          f"(runs: {joined((x['plain_s_per_step'] for x in ar_runs), '{:.4f}')})")
    print(f"  {'ratio measured / plain':44s} {measured / plain:10.2f}   "
          f"(per round: {joined(a['measured_over_plain_per_round'], '{:.2f}')})")
    print(f"  {'plain, caches flushed (cold), s per step':44s} {plain_cold:10.4f}   "
          f"(runs: {joined((x['plain_s_per_step'] for x in cold_runs), '{:.4f}')})")
    print(f"  {'ratio measured / plain cold':44s} {measured / plain_cold:10.2f}")
    print("  plain MPI_Allreduce per size (median over rounds of the per-size medians), warm | cold:")
    print(f"    {'count':>8s} {'bytes':>9s} {'calls/step':>10s} {'median_us':>10s} {'busbw_GB/s':>10s}"
          f" | {'median_us':>10s} {'busbw_GB/s':>10s}")
    for c, n in sorted(calls.items(), reverse=True):
        print(f"    {c:8d} {4 * c:9d} {n:10d} {per_size(ar_runs, c, 'median_s') * 1e6:10.1f}"
              f" {per_size(ar_runs, c, 'busbw_GBps'):10.3f} | {per_size(cold_runs, c, 'median_s') * 1e6:10.1f}"
              f" {per_size(cold_runs, c, 'busbw_GBps'):10.3f}")
    print(f"summary: {out}/tp_summary.json")


def main():
    (out, rounds, log_interval, load_before, load_after, waited, cpu_model, nproc,
     cmd_t2, cmd_t1, cmd_tp2, cmd_ar, cmd_ar_cold) = sys.argv[1:]
    rounds, log_interval = int(rounds), int(log_interval)
    plan = read_json(f"{out}/tp_allreduce_plan.json")
    runs = {n: per_round(rounds, lambda r, n=n: train_run(out, n, r, log_interval)) for n in TRAIN_RUNS}
    tps = {n: median_of(v, "tokens_per_s") for n, v in runs.items()}

    calls = {e["count"]: e["calls"] for e in plan["per_step"]}
    # The gradient norm's 2 floats are 1 double: 8 bytes either way.
    plan_bytes = sum(4 * c * n for c, n in calls.items()) - 4 * 2 * calls.get(2, 0) + 8 * calls.get(2, 0)
    ar_runs = per_round(rounds, lambda r: plain_run(out, "warm", r, calls))
    cold_runs = per_round(rounds, lambda r: plain_run(out, "cold", r, calls))
    plain = median_of(ar_runs, "plain_s_per_step")
    plain_cold = median_of(cold_runs, "plain_s_per_step")
    per_round_ratio = [t["tp_allreduce_s_per_step"] / a["plain_s_per_step"] for t, a in zip(runs["tp2"], ar_runs)]
    measured = median_of(runs["tp2"], "tp_allreduce_s_per_step")
    big = max(calls)
    summary = {
        "machine": {"cpu": cpu_model, "nproc": int(nproc), "mpi": ar_runs[0]["mpi"]},
        "rounds": rounds, "warmup_interval_skipped": True, "log_interval": log_interval,
        **machine_load(load_before, load_after, waited),
        "commands": {"tp1_t2": cmd_t2, "tp1_t1": cmd_t1, "tp2": cmd_tp2, "allreduce": cmd_ar,
                     "allreduce_cold": cmd_ar_cold},
        "tokens_per_s": tps,
        "runs": runs,
        "ratios": {"tp2_over_tp1_t2": tps["tp2"] / tps["tp1_t2"],
                   "tp2_over_tp1_t1": tps["tp2"] / tps["tp1_t1"],
                   "tp1_t2_over_tp1_t1": tps["tp1_t2"] / tps["tp1_t1"]},
        "allreduce_plan": plan,
        "allreduce_plan_bytes_per_step": plan_bytes,
        "tp2_allreduce": {
            "measured_s_per_step": measured,
            "measured_bytes_per_step": median_of(runs["tp2"], "tp_allreduce_bytes_per_step"),
            "share_of_step_time": median_of(runs["tp2"], "tp_allreduce_share"),
            "plain_mpi_s_per_step": plain,
            "measured_over_plain": measured / plain,
            "measured_over_plain_per_round": per_round_ratio,
            "plain_cold_mpi_s_per_step": plain_cold,
            "measured_over_plain_cold": measured / plain_cold,
            "largest_count": big, "largest_median_s": per_size(ar_runs, big, "median_s"),
            "largest_busbw_GBps": per_size(ar_runs, big, "busbw_GBps"),
            "plain_runs": ar_runs,
            "plain_cold_runs": cold_runs,
        },
    }
    write_json(f"{out}/tp_summary.json", summary)
    print_table(out, rounds, runs, tps, summary["tp2_allreduce"], calls, plan_bytes)


if __name__ == "__main__":
    main()
