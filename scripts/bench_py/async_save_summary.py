"""The summary of scripts/bench_async_save.sh: writes and prints
OUT/async_save_summary.json, the stall of the step loop a save, synchronous
against asynchronous, the asynchronous run's wait at its end and the runs'
tokens/s, medians over the three rounds.

    async_save_summary.py OUT

Reads OUT/async_{none,sync,async}_R.log for R = 1, 2, 3.
"""

import json
import re
import sys

from bench_stats import median, write_json

KINDS = ("none", "sync", "async")


def found(pattern, log):
    return [float(x) for x in re.findall(pattern, log)]


def main():
    out = sys.argv[1]

    def log(name):
        with open(f"{out}/async_{name}.log") as f:
            return f.read()
    rows = {kind: [] for kind in KINDS}
    stall = {"sync": [], "async": []}
    end_wait = []
    for r in (1, 2, 3):
        for kind in rows:
            rows[kind].append(found(r"\| (\d+) tok/s", log(f"{kind}_{r}"))[-1])
        sync = found(r"saved checkpoint \S+ in ([0-9.]+) s", log(f"sync_{r}"))
        snap = found(r"the snapshot took ([0-9.]+) s", log(f"async_{r}"))
        waited = found(r"waited ([0-9.]+) s for it", log(f"async_{r}"))
        stall["sync"].append(sum(sync) / len(sync))
        # The last wait is the end of the run's, once a run: reported apart.
        stall["async"].append((sum(snap) + sum(waited[:-1])) / len(snap))
        end_wait.append(waited[-1])
    summary = {
        "stall_per_save_s": {k: median(v) for k, v in stall.items()},
        "stall_ratio": median(stall["async"]) / median(stall["sync"]),
        "async_end_of_run_wait_s": median(end_wait),
        "tokens_per_s": {k: median(v) for k, v in rows.items()},
        "rounds": {"stall": stall, "tokens_per_s": rows},
    }
    write_json(f"{out}/async_save_summary.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
