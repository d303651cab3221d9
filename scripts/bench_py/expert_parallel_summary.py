"""The summary of scripts/bench_expert_parallel.sh: writes OUT/ep_summary.json
(its "layer_bytes_equal" tells whether one layer's measured all-to-all
bytes are the planner's) and prints the table of one layer's dispatch
against plain MPI_Alltoallv, the step time at EP=1 and EP=2 and the
all-to-all bytes a step against the plan, medians over the rounds.

    expert_parallel_summary.py OUT ROUNDS LOG_INTERVAL LOAD_BEFORE LOAD_AFTER NPROC
        CMD_EP1 CMD_EP2 CMD_DISPATCH

Reads OUT/ep_plan.json and, for each round R, OUT/ep_{ep1,ep2}_R.jsonl and
OUT/ep_dispatch_R.json.
"""

import sys

from bench_stats import after_warmup, medians, per_round, read_json, write_json

PLAN_CMD = "moetrain plan --config configs/bench.toml --num-gpus 2 --ep 2 --json"


def run(out, name, r, log_interval):
    """A run's figures a step over the intervals after the first."""
    _, later = after_warmup(f"{out}/ep_{name}_{r}.jsonl", log_interval)
    steps = log_interval * len(later)
    secs = sum(m["interval_s"] for m in later)
    return {"step_s": secs / steps,
            "tokens_per_s": sum(m["global_batch_tokens"] * log_interval for m in later) / secs,
            "alltoall_s_per_step": sum(m["ep_alltoall_s"] for m in later) / steps,
            "alltoall_bytes_per_step": sum(m["ep_alltoall_bytes"] for m in later) / steps}


def print_table(out, rounds, s):
    m, dispatch = s["medians"], s["dispatch"]
    measured, planned = s["layer_bytes_measured"], s["layer_bytes_planned"]
    print()
    print(f"expert parallelism, configs/bench.toml, 2 ranks, 1 thread a rank, median of {rounds} rounds")
    print(f"  one layer's all-to-all bytes a micro-batch (balanced): measured {measured:.0f}, "
          f"planned {planned:.0f} -> {'equal' if measured == planned else 'DIFFERENT'}")
    print(f"  one layer's dispatch {dispatch['dispatch_median_s'] * 1e3:.3f} ms, plain MPI_Alltoallv of the same bytes "
          f"{dispatch['plain_alltoallv_median_s'] * 1e3:.3f} ms -> ratio {dispatch['dispatch_over_plain']:.2f}")
    print(f"  EP=1 (DP 2) step {m['ep1']['step_s']:.4f} s, {m['ep1']['tokens_per_s']:.0f} tok/s")
    print(f"  EP=2 (DP 2) step {m['ep2']['step_s']:.4f} s, {m['ep2']['tokens_per_s']:.0f} tok/s "
          f"({s['ep2_step_over_ep1']:.3f} x EP=1); all-to-alls {m['ep2']['alltoall_s_per_step'] * 1e3:.1f} ms a step")
    print(f"  all-to-all bytes a step (the router's real load): {m['ep2']['alltoall_bytes_per_step']:.0f}, "
          f"planned (balanced) {s['step_bytes_planned']:.0f} -> ratio {s['step_bytes_measured_over_planned']:.3f}")
    print(f"summary: {out}/ep_summary.json")


def main():
    out, rounds, log_interval, load_before, load_after, nproc, c1, c2, cd = sys.argv[1:]
    rounds, log_interval = int(rounds), int(log_interval)
    plan = read_json(f"{out}/ep_plan.json")
    stage = plan["pipeline"]["stages"][0]
    planned_layer = stage["ep_sent_bytes_per_micro_batch"] / stage["layers"]
    planned_step = plan["communication"]["ep_sent_bytes"]
    runs = {n: per_round(rounds, lambda r, n=n: run(out, n, r, log_interval)) for n in ("ep1", "ep2")}
    ds = per_round(rounds, lambda r: read_json(f"{out}/ep_dispatch_{r}.json"))
    if not all(d["results_ok"] for d in ds):
        sys.exit("bench_expert_dispatch: the tokens did not come back")
    m = {n: medians(v) for n, v in runs.items()}
    measured_layer = ds[0]["bytes_sent_per_layer"]
    dispatch = medians([{k: d[k] for k in ("dispatch_median_s", "plain_alltoallv_median_s", "dispatch_over_plain")}
                        for d in ds])
    summary = {
        "nproc": int(nproc), "rounds": rounds, "load_before": load_before, "load_after": load_after,
        "commands": {"ep1": c1, "ep2": c2, "dispatch": cd, "plan": PLAN_CMD},
        "medians": m, "runs": runs, "dispatch_runs": ds, "dispatch": dispatch,
        "layer_bytes_measured": measured_layer, "layer_bytes_planned": planned_layer,
        "layer_bytes_equal": measured_layer == planned_layer,
        "step_bytes_planned": planned_step,
        "step_bytes_measured_over_planned": m["ep2"]["alltoall_bytes_per_step"] / planned_step,
        "ep2_step_over_ep1": m["ep2"]["step_s"] / m["ep1"]["step_s"],
    }
    write_json(f"{out}/ep_summary.json", summary)
    print_table(out, rounds, summary)


if __name__ == "__main__":
    main()
