"""The summary of scripts/bench_pipeline_bubble.sh: writes
OUT/bubble_summary.json and prints, for PP = 2, 4, 8 and m = 4, 8, 16
micro-batches, the ideal 1F1B bubble against each stage's measured idle
share of the step (mean over the intervals after the first).

    pipeline_bubble_summary.py OUT

Reads OUT/bubble_ppPP_mM.jsonl.
"""

import sys

from bench_stats import read_jsonl, write_json


def row(out, pp, m):
    recs = read_jsonl(f"{out}/bubble_pp{pp}_m{m}.jsonl")[1:]  # the first interval is warm-up
    idle = [sum(r["pipeline_idle"][s] for r in recs) / len(recs) for s in range(pp)]
    return {"pp": pp, "m": m, "ideal": (pp - 1) / (m + pp - 1), "idle_per_stage": idle,
            "idle_mean": sum(idle) / pp, "tokens_per_s": sum(r["tokens_per_s"] for r in recs) / len(recs)}


def main():
    out = sys.argv[1]
    rows = [row(out, pp, m) for pp in (2, 4, 8) for m in (4, 8, 16)]
    print(f"{'PP':>3} {'m':>3} {'ideal':>7} {'measured mean':>14}  per stage")
    for r in rows:
        print(f"{r['pp']:>3} {r['m']:>3} {r['ideal']:>7.3f} {r['idle_mean']:>14.3f}  " +
              " ".join(f"{x:.2f}" for x in r["idle_per_stage"]))
    write_json(f"{out}/bubble_summary.json", rows)


if __name__ == "__main__":
    main()
