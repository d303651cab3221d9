"""Shared by the benchmark summaries in this folder (scripts/bench_*.sh run
them): reading the runs' files, the measured intervals of a training run,
the medians over rounds and writing the summary file. Prints nothing."""

import json
import os
import statistics
import sys

median = statistics.median


def read_jsonl(path):
    """The JSON objects of a JSON-lines file, blank lines skipped."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def after_warmup(path, log_interval):
    """The records of a `train --metrics-file` file and those after its
    first log interval, the warm-up; exits naming the file if none follow."""
    recs = read_jsonl(path)
    later = [m for m in recs if m["step"] > log_interval]
    if not later:
        sys.exit(f"{os.path.basename(path)} has no interval after the warm-up")
    return recs, later


def per_round(rounds, read):
    """read(r) for the rounds r = 1..rounds, whose files end in _r."""
    return [read(r) for r in range(1, rounds + 1)]


def median_of(runs, key):
    """The median of one figure over the rounds' runs."""
    return median(run[key] for run in runs)


def medians(runs):
    """{key: its median over the rounds' runs} for every key of a run."""
    return {key: median_of(runs, key) for key in runs[0]}


def write_json(path, obj):
    """The summary file: indented JSON with a final newline."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def machine_load(load_before, load_after, waited):
    """The machine's load around the timed runs (uptime's lines) and the
    seconds the script waited for it to settle, for a summary."""
    return {"load_before": load_before.strip(), "load_after": load_after.strip(), "load_wait_s": int(waited)}
