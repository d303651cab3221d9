"""The summary of scripts/bench_generate.sh: writes OUT/generate.json and
prints the table of generated tokens/s a mode, its ratios to static
batching of the same batch and to no cache, and how many of its
completions are the no-cache run's.

    generate_summary.py OUT THREADS CPU_MODEL LOAD_BEFORE LOAD_AFTER MODE...

Reads OUT/generate_MODE.log of each MODE (continuous_B, static_B,
one_at_a_time, no_cache).
"""

import json
import re
import sys

from bench_stats import write_json

GENERATED = r"^generated (\d+) tokens for (\d+) prompts in (\d+) steps, ([\d.]+) s: ([\d.]+) tokens/s"


def read_mode(out, mode):
    """The mode's figures from generate's own line, and its completions."""
    with open(f"{out}/generate_{mode}.log") as f:
        log = f.read()
    g = re.search(GENERATED, log, re.M)
    row = {"tokens": int(g[1]), "prompts": int(g[2]), "steps": int(g[3]), "seconds": float(g[4]),
           "tokens_per_s": float(g[5])}
    return row, [json.loads(line)["completion"] for line in log.splitlines() if line.startswith('{"completion"')]


def print_table(out, threads, modes, rows):
    n = rows["no_cache"]["prompts"]
    print()
    print(f"Generation, configs/workstation-moe.toml after 20 steps, {n} prompts, greedy, {threads} threads")
    print(f"  {'mode':>14s} {'tokens':>7s} {'steps':>6s} {'seconds':>8s} {'tokens/s':>9s} {'/static':>8s} "
          f"{'/no cache':>9s} {'same':>6s}")
    for m in modes:
        r = rows[m]
        vs_static = "" if r["vs_static"] is None else format(r["vs_static"], ".2f")
        print(f"  {m:>14s} {r['tokens']:7d} {r['steps']:6d} {r['seconds']:8.2f} {r['tokens_per_s']:9.1f} "
              f"{vs_static:>8s} {r['vs_no_cache']:9.2f} {r['same_completions']:3d}/{n}")
    print(f"summary: {out}/generate.json")


def main():
    out, threads, cpu, load_before, load_after, *modes = sys.argv[1:]
    rows, completions = {}, {}
    for m in modes:
        rows[m], completions[m] = read_mode(out, m)
    for m in modes:
        static = rows.get(f"static_{m.split('_')[-1]}")
        rows[m]["vs_static"] = rows[m]["tokens_per_s"] / static["tokens_per_s"] if static else None
        rows[m]["vs_no_cache"] = rows[m]["tokens_per_s"] / rows["no_cache"]["tokens_per_s"]
        rows[m]["same_completions"] = sum(a == b for a, b in zip(completions[m], completions["no_cache"]))
    summary = {"machine": {"cpu": cpu}, "threads": int(threads),
               "load_before": load_before.strip(), "load_after": load_after.strip(), "modes": rows}
    write_json(f"{out}/generate.json", summary)
    print_table(out, threads, modes, rows)


if __name__ == "__main__":
    main()
