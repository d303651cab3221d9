"""The summary of scripts/bench_long_context.sh: writes OUT/long_context.json
and prints the table of peak resident memory against the plan, tokens/s,
step time and attention's share, a row per sequence length and recompute.

    long_context_summary.py OUT THREADS CPU_MODEL LOAD_BEFORE LOAD_AFTER baseline NAME...

Each NAME (S<length>_<recompute>) and the S = 64 baseline has its
OUT/long_context_NAME.{log,plan.json,jsonl}; the baseline gives the
process's footprint beyond the planned tensors.
"""

import re
import sys

from bench_stats import read_json, read_jsonl, write_json


def read(path):
    with open(path) as f:
        return f.read()


def peak_rss(out, name):
    log = read(f"{out}/long_context_{name}.log")
    return int(re.search(r"^peak_rss_kib (\d+)$", log, re.M).group(1)) * 1024


def plan(out, name):
    return read_json(f"{out}/long_context_{name}.plan.json")["memory"]["largest"]


def row(out, name, footprint):
    seq, recompute = re.fullmatch(r"S(\d+)_(\w+)", name).groups()
    log = read(f"{out}/long_context_{name}.log")
    rss = peak_rss(out, name)
    share = float(re.search(r"^\s+attention \(.*?\)\s+[\d.]+ s\s+([\d.]+)%", log, re.M).group(1)) / 100
    step_s = float(re.search(r"profile of rank 0 over \d+ steps \(([\d.]+) s a step\)", log).group(1))
    metrics = read_jsonl(f"{out}/long_context_{name}.jsonl")
    p = plan(out, name)
    return {"seq_length": int(seq), "recompute": recompute, "peak_rss_bytes": rss,
            "plan_total_bytes": p["total_bytes"], "plan_activations_bytes": p["activations_bytes"],
            "plan_workspace_bytes": p["workspace_bytes"],
            "tensors_over_plan": (rss - footprint) / p["total_bytes"],
            "tokens_per_s": metrics[-1]["tokens_per_s"], "step_seconds": step_s, "attention_share": share}


def print_table(out, threads, footprint, rows):
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


def main():
    out, threads, cpu, load_before, load_after, *names = sys.argv[1:]
    # What the process holds beyond the planner's tensors, from the S = 64 run.
    footprint = peak_rss(out, "baseline") - plan(out, "baseline")["total_bytes"]
    rows = [row(out, name, footprint) for name in names[1:]]
    summary = {"machine": {"cpu": cpu}, "threads": int(threads), "load_before": load_before.strip(),
               "load_after": load_after.strip(), "process_footprint_bytes": footprint, "rows": rows}
    write_json(f"{out}/long_context.json", summary)
    print_table(out, threads, footprint, rows)


if __name__ == "__main__":
    main()
