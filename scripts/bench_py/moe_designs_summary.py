"""The summary of scripts/bench_moe_designs.sh: writes OUT/moe_designs.json
and OUT/moe_designs_balance.png and prints the table of fine-grained against
coarse experts (median tokens/s over the rounds, the ratio, each run's
parameters) and of aux-loss against aux-loss-free balancing (final loss,
each MoE layer's worst expert's load over its layer's mean over the last
WINDOW steps, and the max over layers).

    moe_designs_summary.py OUT ROUNDS THREADS LOG_INTERVAL BALANCE_LOG_INTERVAL
        WINDOW LOAD_BEFORE LOAD_AFTER WAITED CPU_MODEL NPROC
        CMD_FINE CMD_COARSE CMD_AUX CMD_BIAS CMD_BIAS_FAST

Reads, for each round R, OUT/moe_designs_{fine,coarse}_R.{jsonl,log} and
OUT/moe_designs_balance_{aux,bias,bias_fast}.{jsonl,log}. The PNG has heat
maps, a row a (MoE layer, expert), a column a logged step: in the top row the
load (tokens routed in the interval over the layer's mean) of the aux-loss
run and of the two expert-bias runs (DeepSeek-V3's rate 1e-3 and 1e-2) on
one colour scale, below each bias run's load its bias.
"""

import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from bench_stats import after_warmup, machine_load, median_of, per_round, read_jsonl, write_json  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from plot_metrics import plot_heat_map  # noqa: E402  (scripts/plot_metrics.py)

BALANCE_ARMS = {"aux": "aux loss 1e-2", "bias": "expert bias 1e-3, no aux loss",
                "bias_fast": "expert bias 1e-2, no aux loss"}
BIAS_ARMS = ("bias", "bias_fast")
LAST_LOSSES = 3  # the final loss is the mean of the last this many logged


def flag(cmd, name):
    """The integer value of `--name N` in a command line."""
    m = re.search(rf"--{name} (\d+)", cmd)
    return int(m.group(1)) if m else None


def parameters(log):
    """(total, active per token) from moetrain's "parameters:" line."""
    with open(log) as f:
        m = re.search(r"^parameters: (\d+) total, (\d+) active per token", f.read(), re.M)
    if not m:
        sys.exit(f"{log}: no 'parameters: N total, M active per token' line")
    return int(m.group(1)), int(m.group(2))


def throughput_run(out, name, r, log_interval):
    """Tokens/s over the intervals after the first: their tokens over their time."""
    recs, later = after_warmup(f"{out}/moe_designs_{name}_{r}.jsonl", log_interval)
    steps = {m["step"]: m["step"] - prev["step"] for prev, m in zip(recs, recs[1:])}
    toks = sum(m["global_batch_tokens"] * steps[m["step"]] for m in later)
    secs = sum(m["interval_s"] for m in later)
    total, active = parameters(f"{out}/moe_designs_{name}_{r}.log")
    return {"tokens_per_s": toks / secs, "interval_tokens_per_s": [m["tokens_per_s"] for m in recs],
            "parameters_total": total, "parameters_active": active}


def design(out, name, cmd, rounds, log_interval):
    runs = per_round(rounds, lambda r: throughput_run(out, name, r, log_interval))
    experts, topk, width = (flag(cmd, f) for f in ("num-experts", "moe-router-topk", "moe-ffn-hidden-size"))
    return {"experts": experts, "topk": topk, "expert_width": width, "active_expert_width": topk * width,
            "parameters_total": runs[0]["parameters_total"], "parameters_active": runs[0]["parameters_active"],
            "tokens_per_s": median_of(runs, "tokens_per_s"), "runs": runs}


def balance_arm(out, name, window):
    """A balancing run's final loss and its worst expert's load over the mean
    of each MoE layer, over the logged intervals of the last `window` steps:
    window_steps [A, B] are the steps A+1 to B those intervals cover."""
    recs = read_jsonl(f"{out}/moe_designs_balance_{name}.jsonl")
    last = recs[-1]["step"]
    tail = [m for m in recs if m["step"] > last - window]
    layers = recs[-1]["experts"]["layers"]
    routed = [[sum(col) for col in zip(*(m["experts"]["routed"][i] for m in tail))] for i in range(len(layers))]
    worst = {str(layer): max(row) / statistics.mean(row) for layer, row in zip(layers, routed)}
    worst_layer = max(worst, key=worst.get)
    total, active = parameters(f"{out}/moe_designs_balance_{name}.log")
    arm = {"final_loss": statistics.mean(m["loss"] for m in recs[-LAST_LOSSES:]),
           "final_loss_records": len(recs[-LAST_LOSSES:]),
           "final_aux_loss": recs[-1]["aux_loss"],
           "window_steps": [recs[-len(tail) - 1]["step"] if len(tail) < len(recs) else 0, last],
           "routed_in_window": dict(zip(map(str, layers), routed)),
           "max_over_mean": worst, "max_over_mean_max": worst[worst_layer], "max_over_mean_layer": int(worst_layer),
           "parameters_total": total, "parameters_active": active}
    bias = recs[-1]["experts"].get("bias")
    if bias:
        arm["final_bias_range"] = [min(min(b) for b in bias), max(max(b) for b in bias)]
    return arm, recs


def heat_rows(recs, field, per_layer):
    """(steps, rows, labels): a column per record, a row per (layer, expert)."""
    recs = [m for m in recs if m["experts"].get(field)]
    layers = recs[-1]["experts"]["layers"]
    columns = [[x for layer in m["experts"][field] for x in per_layer(layer)] for m in recs]
    labels = [f"L{layer} E{e}" for layer, row in zip(layers, recs[-1]["experts"][field]) for e in range(len(row))]
    return [m["step"] for m in recs], [list(row) for row in zip(*columns)], labels


def over_mean(layer):
    mean = statistics.mean(layer)
    return [x / mean if mean > 0 else 0.0 for x in layer]


def heat_map(fig, ax, steps, rows, labels, title, colour_label, **colours):
    plot_heat_map(fig, ax, steps, rows, labels, colour_label, **colours)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize="medium")


def plot_balance(path, recs, steps_run):
    """The arms' loads in the top row on one colour scale; below each bias
    arm's load, its bias, on one scale too."""
    loads = {name: heat_rows(recs[name], "routed", over_mean) for name in BALANCE_ARMS}
    vmax = max(2.0, max(x for _, rows, _ in loads.values() for row in rows for x in row))
    biases = {name: heat_rows(recs[name], "bias", lambda layer: layer) for name in BIAS_ARMS}
    extent = max(1e-12, max(abs(x) for _, rows, _ in biases.values() for row in rows for x in row))
    rows = len(loads["aux"][1])
    fig, axes = plt.subplots(2, len(BALANCE_ARMS), sharey=True, figsize=(17, 2 * (1.5 + 0.16 * rows)),
                             constrained_layout=True)
    for ax, (name, label) in zip(axes[0], BALANCE_ARMS.items()):
        heat_map(fig, ax, *loads[name], f"load: {label}", "tokens / layer mean", cmap="viridis", vmin=0.0, vmax=vmax)
        below = axes[1][list(BALANCE_ARMS).index(name)]
        if name in biases:
            heat_map(fig, below, *biases[name], f"bias: {label}", "expert bias", cmap="coolwarm",
                     vmin=-extent, vmax=extent)
        else:
            below.axis("off")
    axes[0][0].set_ylabel("MoE layer, expert")
    fig.suptitle(f"configs/workstation-deepseek.toml, {steps_run} steps: expert load, aux loss against expert bias")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(s, out):
    fg, bal = s["fine_grained"], s["balancing"]
    print()
    print(f"MoE designs, {s['threads']} threads")
    print(f"fine-grained experts: workstation-moe shape, SwiGLU, tokens/s median of {s['rounds']} rounds")
    print(f"  {'run':8s} {'experts':>7s} {'top-k':>5s} {'width':>5s} {'active width':>12s} "
          f"{'params':>11s} {'active/token':>12s} {'tokens/s':>9s}")
    for name in ("fine", "coarse"):
        d = fg[name]
        print(f"  {name:8s} {d['experts']:7d} {d['topk']:5d} {d['expert_width']:5d} {d['active_expert_width']:12d} "
              f"{d['parameters_total']:11,d} {d['parameters_active']:12,d} {d['tokens_per_s']:9.0f}")
    print(f"  fine / coarse tokens/s: {fg['fine_over_coarse_tokens_per_s']:.3f}")
    a, b = bal["window_steps"]
    layers = list(bal["aux"]["max_over_mean"])
    print(f"balancing: configs/workstation-deepseek.toml, {bal['steps']} steps, same seed and data; "
          f"worst expert's load / layer mean over steps {a + 1}-{b}")
    print(f"  {'run':30s} {'final loss':>10s} {'aux loss':>9s} " + " ".join(f"{'L' + layer:>6s}" for layer in layers)
          + f" {'max':>6s}")
    for name, label in BALANCE_ARMS.items():
        r = bal[name]
        print(f"  {label:30s} {r['final_loss']:10.4f} {r['final_aux_loss']:9.4f} "
              + " ".join(f"{r['max_over_mean'][layer]:6.2f}" for layer in layers) + f" {r['max_over_mean_max']:6.2f}")
    print(f"  final loss: the mean of the last {bal['aux']['final_loss_records']} logged (every "
          f"{bal['log_interval']} steps); aux loss: the last logged")
    print(f"  heat maps: {s['balance_png']}")
    print(f"summary: {out}/moe_designs.json")


def main():
    (out, rounds, threads, log_interval, balance_log_interval, window, load_before, load_after, waited, cpu_model, nproc,
     cmd_fine, cmd_coarse, cmd_aux, cmd_bias, cmd_bias_fast) = sys.argv[1:]
    rounds, threads, log_interval, window = int(rounds), int(threads), int(log_interval), int(window)
    balance_log_interval = int(balance_log_interval)
    fg = {name: design(out, name, cmd, rounds, log_interval) for name, cmd in (("fine", cmd_fine),
                                                                              ("coarse", cmd_coarse))}
    fg["fine_over_coarse_tokens_per_s"] = fg["fine"]["tokens_per_s"] / fg["coarse"]["tokens_per_s"]
    arms, recs = {}, {}
    for name in BALANCE_ARMS:
        arms[name], recs[name] = balance_arm(out, name, window)
    steps_run = recs["aux"][-1]["step"]
    png = f"{out}/moe_designs_balance.png"
    plot_balance(png, recs, steps_run)
    summary = {
        "machine": {"cpu": cpu_model, "nproc": int(nproc)},
        "threads": threads,
        "rounds": rounds,
        **machine_load(load_before, load_after, waited),
        "commands": {"fine": cmd_fine, "coarse": cmd_coarse, "balance_aux": cmd_aux, "balance_bias": cmd_bias,
                     "balance_bias_fast": cmd_bias_fast},
        "fine_grained": fg,
        "balancing": {"steps": steps_run, "log_interval": balance_log_interval,
                      "window_steps": arms["aux"]["window_steps"],
                      **arms},
        "balance_png": png,
    }
    write_json(f"{out}/moe_designs.json", summary)
    print_table(summary, out)


if __name__ == "__main__":
    main()
