#!/usr/bin/python3
"""PyTorch-eager CPU baseline for moetrain throughput.

Runs full float32 training steps of the model of docs/design.md section 3
(scripts/pytorch_reference/torch_model.py) on random tokens: forward + backward over
global/micro micro-batches with gradient accumulation, gradient clipping at
1.0, AdamW; with --bf16, under torch.autocast("cpu", bfloat16) (bf16
products, float32 weights and optimizer). Prints one JSON line at the end:

    {"tokens_per_s": ..., "step_s": ..., "threads": ..., "torch": "...", "bf16": ...}

Example:
    /usr/bin/python3 scripts/pytorch_reference/bench_torch.py --steps 5 --warmup 1 --threads 4
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import Config, MoETransformer, make_adamw, train_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="PyTorch-eager baseline (CPU, float32)")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")
    ap.add_argument("--capacity-factor", type=float, default=0.0)
    ap.add_argument("--aux-coeff", type=float, default=0.01)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--verbose", action="store_true", help="print per-step loss and time to stderr")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast('cpu', dtype=torch.bfloat16)")
    args = ap.parse_args()

    if args.global_batch % args.micro_batch:
        ap.error("--global-batch must divide by --micro-batch")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(args.seed)

    cfg = Config(V=args.vocab, d=args.hidden, L=args.layers, H=args.heads, G=args.groups,
                 F=args.ffn, E=args.experts, K=args.topk if args.experts > 1 else 1, S=args.seq,
                 capacity_factor=args.capacity_factor, aux_coeff=args.aux_coeff)
    model = MoETransformer(cfg, dtype=torch.float32)
    model.reset_parameters(std=0.02)
    opt = make_adamw(model, lr=args.lr)
    n_micro = args.global_batch // args.micro_batch
    gen = torch.Generator().manual_seed(args.seed)

    def batch():
        toks = torch.randint(0, cfg.V, (args.global_batch, cfg.S + 1), generator=gen)
        return list(toks.split(args.micro_batch))

    def step(mbs):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            return train_step(model, opt, mbs, clip=1.0)

    for i in range(args.warmup):
        ce, aux, norm = step(batch())
        if args.verbose:
            print(f"warmup {i}: ce {ce:.4f} aux {aux:.4f} norm {norm:.3f}", file=sys.stderr)

    batches = [batch() for _ in range(args.steps)]   # data generation outside the timing
    times = []
    for i, mbs in enumerate(batches):
        t0 = time.perf_counter()
        ce, aux, norm = step(mbs)
        times.append(time.perf_counter() - t0)
        if args.verbose:
            print(f"step {i}: ce {ce:.4f} aux {aux:.4f} norm {norm:.3f} {times[-1]:.3f}s",
                  file=sys.stderr)

    total = sum(times)
    step_s = total / max(len(times), 1)
    tokens_per_s = args.global_batch * cfg.S * len(times) / total if total > 0 else 0.0
    print(json.dumps({"tokens_per_s": round(tokens_per_s, 1), "step_s": round(step_s, 5),
                      "threads": threads, "torch": str(torch.__version__), "bf16": args.bf16}))


if __name__ == "__main__":
    main()
