"""The summary of scripts/bench_throughput.sh: writes OUT/summary.json and
prints the table of tokens/s, GFLOP/s, share of the matrix-product peak and
ratio to the fastest PyTorch variant, medians over the rounds.

    throughput_summary.py OUT ROUNDS THREADS LOG_INTERVAL LOAD_BEFORE LOAD_AFTER
        WAITED TORCH_PACKAGE CPU_MODEL NPROC TRAIN_CMD TORCH_CMD

Reads OUT/matmul.json, OUT/metrics_moetrain_{fp32,bf16}_R.jsonl and
OUT/torch_{fp32,fp32_tuned,bf16_tuned}_R.json for each round R.
"""

import sys

from bench_stats import after_warmup, machine_load, median_of, per_round, read_json, write_json

TORCH_RUNS = ("torch_fp32", "torch_fp32_tuned", "torch_bf16_tuned")


def peaks(out):
    """The best product of each precision, over shapes and libraries."""
    matmul = read_json(f"{out}/matmul.json")
    peak = {}
    for precision in ("fp32", "bf16"):
        best = max((row for row in matmul if row["precision"] == precision), key=lambda row: row["gflops"])
        peak[precision] = {"gflops": best["gflops"], "shape": best["shape"], "library": best["library"]}
    return peak


def moetrain_run(out, name, r, log_interval):
    """Throughput over the intervals after the first: their tokens over their
    time. Returns the run and its training GFLOP a token."""
    recs, later = after_warmup(f"{out}/metrics_{name}_{r}.jsonl", log_interval)
    toks = sum(m["global_batch_tokens"] * log_interval for m in later)
    secs = sum(m["global_batch_tokens"] * log_interval / m["tokens_per_s"] for m in later)
    flops_per_token = later[0]["gflops_per_s"] / later[0]["tokens_per_s"]
    return {"tokens_per_s": toks / secs, "interval_tokens_per_s": [m["tokens_per_s"] for m in recs]}, flops_per_token


def moetrain(out, name, rounds, log_interval):
    """The median over rounds of a moetrain run's throughput."""
    measured = per_round(rounds, lambda r: moetrain_run(out, name, r, log_interval))
    runs = [run for run, _ in measured]
    flops_per_token = measured[-1][1]  # the model's: the same in every round
    tps = median_of(runs, "tokens_per_s")
    return {"tokens_per_s": tps, "gflops_per_s": tps * flops_per_token, "train_gflop_per_token": flops_per_token,
            "runs": runs}


def torch_run(out, name, rounds):
    runs = per_round(rounds, lambda r: read_json(f"{out}/{name}_{r}.json"))
    return {"tokens_per_s": median_of(runs, "tokens_per_s"), "runs": runs}


def print_table(summary, peak, torch_best, out):
    results = summary["results"]
    print()
    print(f"Training throughput, configs/bench.toml, {summary['threads']} threads, "
          f"median of {summary['rounds']} runs each")
    print(f"  {'run':28s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {'x fastest torch':>16s}")
    for name, r in results.items():
        precision = "bf16" if "bf16" in name else "fp32"
        gf = r.get("gflops_per_s")
        print(f"  {name:28s} {r['tokens_per_s']:9.0f} {gf if gf else float('nan'):8.1f} "
              f"{(gf / peak[precision]['gflops']) if gf else float('nan'):8.2f} {r['tokens_per_s'] / torch_best:16.2f}")
    for precision in ("fp32", "bf16"):
        p = peak[precision]
        print(f"  matrix-product peak, {precision}: {p['gflops']:.1f} GFLOP/s ({p['library']}, {p['shape']})")
    print(f"  fastest PyTorch variant: {summary['fastest_torch']} (torch {summary['torch']['version']})")
    print(f"summary: {out}/summary.json")


def main():
    (out, rounds, threads, log_interval, load_before, load_after, waited, torch_pkg, cpu_model, nproc,
     train_cmd, torch_cmd) = sys.argv[1:]
    rounds, threads, log_interval = int(rounds), int(threads), int(log_interval)
    peak = peaks(out)
    results = {name: moetrain(out, name, rounds, log_interval) for name in ("moetrain_fp32", "moetrain_bf16")}
    for name in TORCH_RUNS:
        results[name] = torch_run(out, name, rounds)
    fastest_torch = max(TORCH_RUNS, key=lambda n: results[n]["tokens_per_s"])
    torch_best = results[fastest_torch]["tokens_per_s"]
    ratios = {}
    for precision in ("fp32", "bf16"):
        m = results[f"moetrain_{precision}"]
        ratios[f"moetrain_{precision}_over_fastest_torch"] = m["tokens_per_s"] / torch_best
        ratios[f"moetrain_{precision}_gflops_over_{precision}_peak"] = m["gflops_per_s"] / peak[precision]["gflops"]
    summary = {
        "machine": {"cpu": cpu_model, "nproc": int(nproc)},
        "threads": threads,
        "rounds": rounds,
        **machine_load(load_before, load_after, waited),
        "commands": {"moetrain": train_cmd, "torch": torch_cmd},
        "matmul_peak_gflops": peak,
        "results": results,
        "fastest_torch": fastest_torch,
        "torch": {"version": results["torch_fp32"]["runs"][0].get("torch"), "package": torch_pkg},
        "ratios": ratios,
    }
    write_json(f"{out}/summary.json", summary)
    print_table(summary, peak, torch_best, out)


if __name__ == "__main__":
    main()
