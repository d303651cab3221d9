"""The all-reduces a step of a tensor-parallel run of a config makes, for
scripts/bench_tensor_parallel.sh: prints one JSON line, {"T", "d", "L", "K",
"G", "micro_batches", "per_step": [{"count", "calls", "what"}, ...]}, the
element counts largest first with their calls a step.

    tensor_parallel_plan.py CONFIG.toml TP

The counts, per micro-batch of T = micro-batch x S tokens (see
model/transformer.cpp, model/moe_layer.cpp, model/dense_mlp.cpp,
parallel/tensor_parallel.cpp):
  [T,d]: embedding output, per layer attention projection and FFN output
         (forward), FFN and attention input gradients (backward), LM head
         input gradient: 4L + 2 calls;
  [T*K]: per layer the MoE routing-weight gradient (kept assignments; T*K
         with --moe-expert-capacity-factor 0, no drops): L calls;
  [T]:   cross-entropy row max (MPI_MAX; timed as SUM): 1 call;
  [2T]:  cross-entropy sums: 1 call.
Per step: wk and wv gradients of every layer when G < TP ([G*hd, d], 2L
calls, model/transformer.cpp reduce_partial_grads), and the gradient norm
(1 double = 8 bytes, optim/adamw.cpp; timed as 2 floats).
"""

import json
import sys
import tomllib


def main():
    with open(sys.argv[1], "rb") as f:
        cfg = tomllib.load(f)
    tp = int(sys.argv[2])
    L, d, H = cfg["num-layers"], cfg["hidden-size"], cfg["num-attention-heads"]
    G, K, S = cfg["num-query-groups"], cfg["moe-router-topk"], cfg["seq-length"]
    mb, gb = cfg["micro-batch-size"], cfg["global-batch-size"]
    if cfg.get("moe-expert-capacity-factor", 0.0) != 0.0:
        sys.exit("the plan assumes --moe-expert-capacity-factor 0 (every assignment kept)")
    T, hd, micro = mb * S, d // H, gb // mb
    per_step = {}  # element count -> [calls per step, what]

    def add(count, calls, what):
        e = per_step.setdefault(count, [0, []])
        e[0] += calls
        e[1].append(what)

    add(T * d, micro * (4 * L + 2), "[T,d] activations and input gradients")
    add(T * K, micro * L, "[T*K] routing-weight gradient")
    add(T, micro, "[T] cross-entropy row max (MAX)")
    add(2 * T, micro, "[2T] cross-entropy sums")
    if G < tp:
        add(G * hd * d, 2 * L, "[G*hd,d] replicated wk/wv gradient")
    add(2, 1, "gradient norm, 1 double (as 2 floats)")
    print(json.dumps({"T": T, "d": d, "L": L, "K": K, "G": G, "micro_batches": micro,
                      "per_step": [{"count": c, "calls": v[0], "what": "; ".join(v[1])}
                                   for c, v in sorted(per_step.items(), reverse=True)]}))


if __name__ == "__main__":
    main()
