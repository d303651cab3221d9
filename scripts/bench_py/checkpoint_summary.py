"""The summary of scripts/bench_checkpoint.sh: writes
OUT/checkpoint_summary.json and prints the file's size with dd's rate and
a table per layout (1 rank; 8 ranks, TP2 x PP2 x DP2) of save and load
bandwidth against sequential write and read, and of the save against a
training step.

    checkpoint_summary.py OUT LOAD_BEFORE LOAD_AFTER

Reads OUT/ckpt_bench_{1,8}.json (Google Benchmark, medians over its
repetitions), OUT/ckpt_dd.log and OUT/ckpt_train_{1,8}.{log,jsonl}.
"""

import re
import statistics
import sys

from bench_stats import read_json, read_jsonl, write_json

LAYOUTS = ((1, "1 rank"), (8, "8 ranks: TP2 x PP2 x DP2"))


def medians(path):
    """{benchmark: its median time (s) and GB/s over the repetitions}."""
    by = {}
    for r in read_json(path)["benchmarks"]:
        if r.get("run_type") != "iteration":
            continue
        by.setdefault(r["run_name"].split("/")[0], []).append(r)
    return {name: {"s": statistics.median(r["real_time"] for r in rs) / 1e3,  # ms -> s
                   "GBps": statistics.median(r["GB"] for r in rs), "bytes": rs[0]["bytes"],
                   "runs_GBps": [r["GB"] for r in rs]}
            for name, rs in by.items()}


def dd_times(path):
    """The seconds of each dd in the log."""
    with open(path) as f:
        return [float(m.group(1)) for m in (re.search(r"copied, ([0-9.]+) s", line) for line in f) if m]


def train_figures(log, metrics):
    last = read_jsonl(metrics)[-1]  # steps 4-6: the first interval is warm-up
    step_s = last["global_batch_tokens"] / last["tokens_per_s"]
    with open(log) as f:
        m = re.search(r"saved checkpoint \S+ in ([0-9.]+) s \(([0-9.]+) GB/s\)", f.read())
    save_s = float(m.group(1)) if m else float("nan")
    return {"step_s": step_s, "save_s": save_s, "save_over_step": save_s / step_s}


def layout(out, ranks, label):
    b = medians(f"{out}/ckpt_bench_{ranks}.json")
    return {"label": label, "bench": b,
            "save_over_write": b["Save"]["GBps"] / b["SequentialWrite"]["GBps"],
            "load_over_read": b["Load"]["GBps"] / b["SequentialRead"]["GBps"],
            "train": train_figures(f"{out}/ckpt_train_{ranks}.log", f"{out}/ckpt_train_{ranks}.jsonl")}


def print_table(summary):
    dd = statistics.median(summary["dd_s"])
    nbytes = summary["layouts"]["1"]["bench"]["Save"]["bytes"]
    print(f"\ncheckpoint file: {nbytes / 1e6:.1f} MB; dd conv=fsync of it: median {dd:.3f} s"
          f" ({nbytes / dd / 1e9:.2f} GB/s)")
    print(f"{'layout':<26} {'save GB/s':>9} {'write GB/s':>10} {'ratio':>6} {'load GB/s':>9} {'read GB/s':>9}"
          f" {'ratio':>6} {'step s':>7} {'save s':>7} {'save/step':>9}")
    for r in summary["layouts"].values():
        b, t = r["bench"], r["train"]
        print(f"{r['label']:<26} {b['Save']['GBps']:>9.3f} {b['SequentialWrite']['GBps']:>10.3f}"
              f" {r['save_over_write']:>6.2f} {b['Load']['GBps']:>9.3f} {b['SequentialRead']['GBps']:>9.3f}"
              f" {r['load_over_read']:>6.2f} {t['step_s']:>7.3f} {t['save_s']:>7.3f} {t['save_over_step']:>9.2f}")


def main():
    out, load_before, load_after = sys.argv[1:4]
    summary = {"load_before": load_before, "load_after": load_after,
               "layouts": {str(ranks): layout(out, ranks, label) for ranks, label in LAYOUTS},
               "dd_s": dd_times(f"{out}/ckpt_dd.log")}
    print_table(summary)
    write_json(f"{out}/checkpoint_summary.json", summary)


if __name__ == "__main__":
    main()
