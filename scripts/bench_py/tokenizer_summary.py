"""The summary of scripts/bench_tokenizer.sh: writes OUT/tokenizer.json and
prints the table of tokens/s of prepare-data with one worker, the oracle's
on one thread and their ratio, and prepare-data with WORKERS workers
against one.

    tokenizer_summary.py OUT ROUNDS WORKERS MB LOAD_BEFORE LOAD_AFTER WAITED CPU_MODEL NPROC
                         (NAME ORACLE FLAGS)...

Reads OUT/tokenizer_times.tsv (NAME RUN ROUND START END, the wall clock of
each prepare-data run), OUT/tokenizer_NAME_RUN_ROUND.log (prepare-data's
"wrote" line), OUT/tokenizer_NAME_oracle_ROUND.json (the oracle's timing,
token count and sum of ids), the stores OUT/tokenizer_NAME_RUN_text_document
(the last round's) and the corpus. A run's tokens/s is its tokens over its
wall time less the median wall time of the one-document run (RUN tiny:
start-up and the tokenizer's construction). Exits 1, after writing the
summary, if an oracle's tokens or the stores of 1 and WORKERS workers
differ.
"""

import json
import re
import sys

import numpy as np

from bench_stats import machine_load, median, write_json

WROTE = (r"^wrote .*: (\d+) documents, (\d+) tokens .*; ([\d.]+) MB in ([\d.]+) s: ([\d.]+) MB/s, "
         r"(\d+) documents/s, (\d+) tokens/s")
# Megatron's .idx dtype codes.
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
SCALING_TARGET = 1.8  # the issue's, for two workers


def read_times(out):
    """{(name, run, round): wall seconds}."""
    times = {}
    with open(f"{out}/tokenizer_times.tsv") as f:
        for line in f:
            name, run, r, start, end = line.split()
            times[name, run, int(r)] = float(end) - float(start)
    return times


def read_wrote(path):
    with open(path) as f:
        g = re.search(WROTE, f.read(), re.M)
    if not g:
        sys.exit(f"{path}: no 'wrote' line")
    return {"documents": int(g[1]), "tokens": int(g[2]), "tokens_per_s": int(g[7])}


def read_store(prefix):
    """The store's documents, tokens and sum of ids, and its bytes."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    with open(prefix + ".bin", "rb") as f:
        data = f.read()
    ids = np.frombuffer(data, DTYPES[idx[17]])
    documents = int.from_bytes(idx[18:26], "little")
    return {"documents": documents, "tokens": int(ids.size), "id_sum": int(ids.astype(np.int64).sum())}, idx + data


def rate(tokens, seconds):
    return tokens / seconds if seconds > 0 else None


def med(values):
    values = [v for v in values if v is not None]
    return median(values) if values else None


def summarise(out, name, oracle, flags, rounds, workers, times):
    fixed_runs = [times[name, "tiny", r] for r in range(1, rounds + 1)]
    fixed = median(fixed_runs)
    row = {"flags": flags, "oracle": oracle, "fixed_seconds": fixed, "fixed_seconds_per_round": fixed_runs}
    for run in ("w1", f"w{workers}"):
        logs = [read_wrote(f"{out}/tokenizer_{name}_{run}_{r}.log") for r in range(1, rounds + 1)]
        walls = [times[name, run, r] for r in range(1, rounds + 1)]
        rates = [rate(log["tokens"], wall - fixed) for log, wall in zip(logs, walls)]
        row[run] = {"tokens": logs[0]["tokens"], "documents": logs[0]["documents"], "wall_seconds": walls,
                    "tokens_per_s_per_round": rates, "tokens_per_s": med(rates),
                    "own_tokens_per_s": median(log["tokens_per_s"] for log in logs)}
    runs = [json.loads(open(f"{out}/tokenizer_{name}_oracle_{r}.json").read().strip().splitlines()[-1])
            for r in range(1, rounds + 1)]
    rates = [rate(o["tokens"], o["seconds"]) for o in runs]
    row["oracle_run"] = {"tokens": runs[0]["tokens"], "documents": runs[0]["documents"], "id_sum": runs[0]["id_sum"],
                         "seconds": [o["seconds"] for o in runs], "load_seconds": median(o["load_seconds"] for o in runs),
                         "tokens_per_s_per_round": rates, "tokens_per_s": med(rates)}

    store1, bytes1 = read_store(f"{out}/tokenizer_{name}_w1_text_document")
    _, bytes_n = read_store(f"{out}/tokenizer_{name}_w{workers}_text_document")
    o = row["oracle_run"]
    row["checks"] = {
        "store": store1,
        "oracle_same_tokens": (o["documents"], o["tokens"], o["id_sum"]) == (
            store1["documents"], store1["tokens"], store1["id_sum"]),
        "workers_same_store": bytes1 == bytes_n,
    }
    w1, wn = row["w1"]["tokens_per_s"], row[f"w{workers}"]["tokens_per_s"]
    row["vs_oracle"] = w1 / o["tokens_per_s"] if w1 and o["tokens_per_s"] else None
    row["scaling"] = wn / w1 if w1 and wn else None
    row["meets_oracle"] = row["vs_oracle"] is not None and row["vs_oracle"] >= 1
    row["meets_scaling"] = row["scaling"] is not None and row["scaling"] >= SCALING_TARGET if workers == 2 else None
    return row


def corpus_size(path):
    documents, size = 0, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                documents += 1
                size += len(json.loads(line)["text"].encode("utf-8"))
    return documents, size


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def print_table(out, rows, workers, rounds, documents, size):
    print()
    print(f"Tokenizers on {size / 1e6:.1f} MB ({documents} documents: prose, code, the repository's sources), "
          f"median of {rounds} rounds")
    print("  moetrain: prepare-data's wall time less that of a one-document run (start-up, construction);")
    print("  reading the JSON lines and writing the store included. Oracles: encoding alone, one thread.")
    wn = f"{workers} workers"
    print(f"  {'tokenizer':>13s} {'tokens':>9s} {'1 worker':>10s} {'oracle':>21s} {'oracle':>10s} {'ratio':>6s} "
          f"{wn:>10s} {f'{workers}-vs-1':>7s} {'fixed s':>7s} {'own 1w':>10s}")
    for name, r in rows.items():
        o = r["oracle_run"]
        print(f"  {name:>13s} {r['w1']['tokens']:9d} {fmt(r['w1']['tokens_per_s'], '10.0f')} {r['oracle']:>21s} "
              f"{fmt(o['tokens_per_s'], '10.0f')} {fmt(r['vs_oracle'], '6.2f')} "
              f"{fmt(r[f'w{workers}']['tokens_per_s'], '10.0f')} {fmt(r['scaling'], '7.2f')} "
              f"{r['fixed_seconds']:7.3f} {r['w1']['own_tokens_per_s']:10.0f}")
    print("  (tokens/s; ratio = 1 worker / oracle; fixed s = the one-document run's wall time, subtracted;"
          " own 1w = prepare-data's own figure, construction included)")
    targets = [f"{name}: vs oracle {'yes' if r['meets_oracle'] else 'NO'}"
               + ("" if r["meets_scaling"] is None else f", 2 workers >= {SCALING_TARGET}x "
                  f"{'yes' if r['meets_scaling'] else 'NO'}") for name, r in rows.items()]
    print("  targets: " + "; ".join(targets))
    for name, r in rows.items():
        c = r["checks"]
        if not c["oracle_same_tokens"]:
            s, o = c["store"], r["oracle_run"]
            print(f"  {name}: the oracle's ids differ: {o['documents']} documents, {o['tokens']} tokens, id sum "
                  f"{o['id_sum']}; moetrain {s['documents']}, {s['tokens']}, {s['id_sum']}")
        if not c["workers_same_store"]:
            print(f"  {name}: the stores of 1 and {workers} workers differ")
    print(f"summary: {out}/tokenizer.json")


def main():
    out, rounds, workers, mb, load_before, load_after, waited, cpu, nproc, *specs = sys.argv[1:]
    rounds, workers = int(rounds), int(workers)
    if len(specs) % 3:
        sys.exit("tokenizer_summary.py: NAME ORACLE FLAGS triples expected")
    times = read_times(out)
    rows = {specs[i]: summarise(out, specs[i], specs[i + 1], specs[i + 2], rounds, workers, times)
            for i in range(0, len(specs), 3)}
    documents, size = corpus_size(f"{out}/tokenizer_corpus.jsonl")
    summary = {
        "machine": {"cpu": cpu, "nproc": int(nproc)},
        **machine_load(load_before, load_after, waited),
        "corpus": {"mb_asked": float(mb), "documents": documents, "bytes": size},
        "rounds": rounds,
        "workers": workers,
        "timed": {
            "moetrain": "wall time of prepare-data --no-append-eod (JSON reading, tokenizing, store writing) "
                        "less the median wall time of a one-document run (start-up, tokenizer construction)",
            "oracle": "encoding every document in one process after loading the vocabulary and reading the corpus",
        },
        "tokenizers": rows,
    }
    write_json(f"{out}/tokenizer.json", summary)
    print_table(out, rows, workers, rounds, documents, size)
    if not all(r["checks"]["oracle_same_tokens"] and r["checks"]["workers_same_store"] for r in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
