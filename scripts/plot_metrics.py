#!/usr/bin/python3
"""Plot a moetrain metrics file (JSON lines) to a PNG.

Each line is one JSON object written by `moetrain train --metrics-file FILE`
with at least `step`, `loss`, `aux_loss` and `lr`, and optionally
`valid_loss`, `tokens_per_s`, `grad_norm` and `global_batch`. Blank lines are skipped;
lines that do not parse are skipped with a warning. When a step appears more
than once (a run resumed into the same file), its last record wins.

Panels: loss (and the validation loss, as points, when logged) with the
auxiliary (load-balancing) loss on a second axis; the
learning rate, with the global batch size on a second axis when logged;
when logged, the gradient norm and throughput; and for a mixture of experts
(records with `experts`), a heat map of each MoE layer's experts' load over
the steps: tokens routed to the expert in the logging interval over the mean
of its layer (1 = balanced; 0 = it received no token); and, when the run
balances with an expert bias (`experts.bias`), a heat map of the bias beside it.

    scripts/plot_metrics.py METRICS.jsonl OUT.png [--title TITLE]
"""

import argparse
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def warn(msg):
    print(f"plot_metrics: warning: {msg}", file=sys.stderr)


def read_records(path):
    """Return the records of a JSON-lines file, keyed by step (last one wins)."""
    by_step = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                warn(f"{path}:{lineno}: not JSON ({e.msg}); line skipped")
                continue
            if not isinstance(rec, dict):
                warn(f"{path}:{lineno}: not a JSON object; line skipped")
                continue
            step = number(rec.get("step"))
            if step is None:
                warn(f"{path}:{lineno}: no numeric 'step'; line skipped")
                continue
            by_step[step] = rec
    return [by_step[s] for s in sorted(by_step)]


def number(value):
    """A finite float from a JSON value, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def series(records, key):
    """(steps, values) for the records that have a finite number under key."""
    steps, values = [], []
    for rec in records:
        v = number(rec.get(key))
        if v is not None:
            steps.append(number(rec["step"]))
            values.append(v)
    return steps, values


def plot_pair(ax, records, left, right, left_label, right_label,
              left_color="tab:blue", right_color="tab:orange", left_log=False, left_points=None):
    """Plot `left` on ax and `right` on a twin axis, and `left_points` (key,
    label), when logged, as points on ax; returns whether anything was drawn."""
    drawn = False
    handles = []
    xs, ys = series(records, left)
    if xs:
        handles += ax.plot(xs, ys, color=left_color, linewidth=1.2, label=left_label)
        ax.set_ylabel(left_label, color=left_color)
        ax.tick_params(axis="y", colors=left_color)
        if left_log and min(ys) > 0:
            ax.set_yscale("log")
        drawn = True
    if left_points:
        xs, ys = series(records, left_points[0])
        if xs:
            handles += ax.plot(xs, ys, "o-", color="tab:cyan", markersize=4, linewidth=0.8,
                               label=left_points[1])
    if right:
        xs, ys = series(records, right)
        if xs:
            twin = ax.twinx()
            handles += twin.plot(xs, ys, color=right_color, linewidth=1.0,
                                 label=right_label)
            twin.set_ylabel(right_label, color=right_color)
            twin.tick_params(axis="y", colors=right_color)
            drawn = True
    if handles:
        ax.legend(handles=handles, labels=[h.get_label() for h in handles],
                  loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return drawn


def expert_rows(records, field, per_layer):
    """(steps, rows, labels): per record whose `experts` has `field`, each
    (layer, expert)'s per_layer(values of its layer) as rows[i][record], i
    counting the MoE layers (`experts.layers`, else 0, 1, ...) times E."""
    steps, columns, labels = [], [], []
    for rec in records:
        experts = rec.get("experts") if isinstance(rec.get("experts"), dict) else {}
        values = experts.get(field)
        if not values or not all(isinstance(layer, list) and layer for layer in values):
            continue
        column = [x for layer in values for x in per_layer(layer)]
        if columns and len(column) != len(columns[0]):
            warn(f"step {rec['step']}: {len(column)} experts, not {len(columns[0])}; record skipped")
            continue
        layers = experts.get("layers") or list(range(len(values)))
        labels = [f"L{layer} E{e}" for layer, row in zip(layers, values) for e in range(len(row))]
        steps.append(number(rec["step"]))
        columns.append(column)
    rows = [[c[i] for c in columns] for i in range(len(columns[0]))] if columns else []
    return steps, rows, labels


def expert_load(records):
    """Each (layer, expert)'s routed tokens over its layer's mean."""
    def over_mean(layer):
        mean = sum(layer) / len(layer)
        return [(x / mean if mean > 0 else 0.0) for x in layer]
    return expert_rows(records, "routed", over_mean)


def expert_bias(records):
    """Each (layer, expert)'s bias (aux-loss-free balancing)."""
    return expert_rows(records, "bias", lambda layer: layer)


def plot_heat_map(fig, ax, steps, rows, labels, colour_label, **colours):
    """A heat map: a row a (layer, expert), a column a logged step."""
    edges = [steps[0] - 0.5] + [(a + b) / 2 for a, b in zip(steps, steps[1:])] + [steps[-1] + 0.5]
    mesh = ax.pcolormesh(edges, range(len(rows) + 1), rows, shading="flat", **colours)
    ax.set_yticks([i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize="x-small" if len(rows) > 16 else "small")
    ax.invert_yaxis()
    ax.set_ylabel("layer, expert")
    fig.colorbar(mesh, ax=ax, label=colour_label)


def plot_expert_load(fig, ax, steps, rows, labels):
    plot_heat_map(fig, ax, steps, rows, labels, "tokens / layer mean", cmap="viridis", vmin=0.0,
                  vmax=max(2.0, max(max(r) for r in rows)))


def plot_expert_bias(fig, ax, steps, rows, labels):
    extent = max(1e-12, max(abs(x) for r in rows for x in r))
    plot_heat_map(fig, ax, steps, rows, labels, "expert bias", cmap="coolwarm", vmin=-extent, vmax=extent)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Plot a moetrain metrics file (JSON lines) to a PNG.")
    parser.add_argument("metrics", help="metrics file written by --metrics-file")
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--title", default=None,
                        help="figure title (default: the metrics file name)")
    args = parser.parse_args(argv)

    try:
        records = read_records(args.metrics)
    except OSError as e:
        print(f"plot_metrics: cannot read {args.metrics}: {e}", file=sys.stderr)
        return 1
    loss_steps, losses = series(records, "loss")
    if not loss_steps:
        print(f"plot_metrics: {args.metrics} has no records with 'step' and 'loss'",
              file=sys.stderr)
        return 1

    has_extra = any(number(r.get(k)) is not None
                    for r in records for k in ("grad_norm", "tokens_per_s"))
    load_steps, load_rows, load_labels = expert_load(records)
    bias_steps, bias_rows, bias_labels = expert_bias(records)
    heat_maps = int(bool(load_rows)) + int(bool(bias_rows))
    nrows = (3 if has_extra else 2) + heat_maps
    heights = [1] * (nrows - heat_maps) + [max(1.0, len(load_rows) / 12)] * heat_maps
    fig, axes = plt.subplots(nrows, 1, sharex=True, figsize=(9, 2.9 * sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, constrained_layout=True)

    plot_pair(axes[0], records, "loss", "aux_loss", "loss (cross-entropy)",
              "aux loss (load balancing)", left_points=("valid_loss", "validation loss"))
    plot_pair(axes[1], records, "lr", "global_batch", "learning rate",
              "global batch (samples)", left_color="tab:green",
              right_color="tab:purple")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if has_extra:
        plot_pair(axes[2], records, "grad_norm", "tokens_per_s", "grad norm",
                  "tokens / s", left_color="tab:red", right_color="tab:gray")
    if load_rows:
        plot_expert_load(fig, axes[nrows - heat_maps], load_steps, load_rows, load_labels)
    if bias_rows:
        plot_expert_bias(fig, axes[-1], bias_steps, bias_rows, bias_labels)
    axes[-1].set_xlabel("step")
    fig.suptitle(args.title if args.title is not None else args.metrics)

    try:
        fig.savefig(args.output, dpi=120)
    except OSError as e:
        print(f"plot_metrics: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    plt.close(fig)
    print(f"plot_metrics: {len(records)} records, steps {loss_steps[0]:g}..{loss_steps[-1]:g}, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
          + (f", expert load of {len(load_rows)} experts" if load_rows else "") + f"; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
