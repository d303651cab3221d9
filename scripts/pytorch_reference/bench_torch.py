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


# The flags with a value: name and default, whose type is the flag's.
OPTIONS = {"vocab": 512, "hidden": 256, "layers": 4, "heads": 8, "groups": 1, "ffn": 512, "experts": 8, "topk": 2,
           "seq": 256, "micro-batch": 4, "global-batch": 16, "steps": 10, "warmup": 2, "threads": 0,
           "capacity-factor": 0.0, "aux-coeff": 0.01, "lr": 3e-4, "seed": 1234}
HELP = {"threads": "torch.set_num_threads (0: torch default)"}


def main():
    ap = argparse.ArgumentParser(description="PyTorch-eager baseline (CPU, float32)")
    for name, default in OPTIONS.items():
        ap.add_argument(f"--{name}", type=type(default), default=default, help=HELP.get(name))
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
