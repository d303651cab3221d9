"""The MoE layer a plan is for, for scripts/bench_expert_parallel.sh: prints
"TOKENS WIDTH EXPERTS TOPK" (tokens a micro-batch, hidden size, experts,
router top-k) from the JSON of `moetrain plan --json`.

    expert_parallel_shape.py PLAN.json
"""

import sys

from bench_stats import read_json


def main():
    p = read_json(sys.argv[1])
    m, l = p["model"], p["layout"]
    print(l["micro_batch_size"] * m["seq_length"], m["hidden_size"], m["num_experts"], m["moe_router_topk"])


if __name__ == "__main__":
    main()
