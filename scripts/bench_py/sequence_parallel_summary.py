"""The summary of scripts/bench_sequence_parallel.sh: writes
OUT/sequence_parallel.json and prints, a row per sequence length and
setting, rank 0's activations and work space (its start-up memory line),
the largest rank's peak resident memory, tokens/s and the TP collectives'
bytes of the second step, and each S's ratios of sequence parallelism to
plain TP.

    sequence_parallel_summary.py OUT THREADS CPU_MODEL LOAD_BEFORE LOAD_AFTER NAME...

Each NAME (S<length>_tp2 or S<length>_tp2_sp) has its
OUT/sequence_parallel_NAME.{log,jsonl}.
"""

import re
import sys

from bench_stats import read_jsonl, write_json


def row(out, name):
    seq, sp = re.fullmatch(r"S(\d+)_tp2(_sp)?", name).groups()
    with open(f"{out}/sequence_parallel_{name}.log") as f:
        log = f.read()
    memory = re.search(r"^memory rank 0 .*activations (\d+) B a micro-batch, workspace (\d+) B", log, re.M)
    last = read_jsonl(f"{out}/sequence_parallel_{name}.jsonl")[-1]
    return {"seq_length": int(seq), "sequence_parallel": sp is not None,
            "activation_bytes": int(memory.group(1)), "workspace_bytes": int(memory.group(2)),
            "peak_rss_bytes": int(re.search(r"^peak_rss_kib (\d+)$", log, re.M).group(1)) * 1024,
            "tokens_per_s": last["tokens_per_s"], "tp_allreduce_bytes": last["tp_allreduce_bytes"],
            "tp_sp_bytes": last.get("tp_sp_bytes", 0.0),
            "tp_share": (last["tp_allreduce_s"] + last.get("tp_sp_s", 0.0)) / last["interval_s"]}


def main():
    out, threads, cpu, load_before, load_after, *names = sys.argv[1:]
    rows = [row(out, name) for name in names]
    ratios = []
    for sp in (r for r in rows if r["sequence_parallel"]):
        tp = next(r for r in rows if r["seq_length"] == sp["seq_length"] and not r["sequence_parallel"])
        ratios.append({"seq_length": sp["seq_length"],
                       "activations": sp["activation_bytes"] / tp["activation_bytes"],
                       "peak_rss": sp["peak_rss_bytes"] / tp["peak_rss_bytes"],
                       "tokens_per_s": sp["tokens_per_s"] / tp["tokens_per_s"]})
    write_json(f"{out}/sequence_parallel.json",
               {"machine": {"cpu": cpu}, "threads": int(threads), "load_before": load_before.strip(),
                "load_after": load_after.strip(), "rows": rows, "sp_over_tp": ratios})
    print()
    print(f"Sequence parallelism, configs/workstation-moe.toml at TP 2, micro-batch 1, {threads} threads a rank")
    print(f"  {'S':>6s} {'SP':>3s} {'activations':>12s} {'workspace':>10s} {'peak RSS':>9s} {'tokens/s':>9s} "
          f"{'all-reduce':>11s} {'RS + AG':>9s} {'TP time':>8s}")
    for r in rows:
        print(f"  {r['seq_length']:6d} {'yes' if r['sequence_parallel'] else 'no':>3s} "
              f"{r['activation_bytes'] / 2**20:8.1f} MiB {r['workspace_bytes'] / 2**20:6.1f} MiB "
              f"{r['peak_rss_bytes'] / 2**20:5.0f} MiB {r['tokens_per_s']:9.0f} "
              f"{r['tp_allreduce_bytes'] / 2**20:7.1f} MiB {r['tp_sp_bytes'] / 2**20:5.1f} MiB {r['tp_share']:8.1%}")
    for q in ratios:
        print(f"  S = {q['seq_length']}: SP / TP activations {q['activations']:.3f}, peak RSS {q['peak_rss']:.3f}, "
              f"tokens/s {q['tokens_per_s']:.2f}")
    print(f"summary: {out}/sequence_parallel.json")


if __name__ == "__main__":
    main()
