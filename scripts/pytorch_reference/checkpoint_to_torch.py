#!/usr/bin/python3
"""Loads a moetrain checkpoint with h5py alone into the PyTorch model of
scripts/pytorch_reference/torch_model.py (docs/checkpoint-format.md).

    scripts/pytorch_reference/checkpoint_to_torch.py CHECKPOINT
        [--data-path PREFIX --eval-samples N] [--generate PROMPT --max-new-tokens N]

CHECKPOINT is a checkpoint.h5, an iter_NNNNNNN directory or a --save
directory (its `latest`). Prints the run's position and layout, each weight's
shape and L2 norm with the norm of its Adam first moment, and, with
--data-path, the mean cross-entropy of the PyTorch model over the first N
samples of that token store in storage order: what `moetrain eval --load
CHECKPOINT --data-path PREFIX --eval-samples N` prints, computed without any
moetrain code. The last line is a JSON object with "loss" and "tokens".
With --generate, the greedy continuation of PROMPT (byte-tokenized) that
`moetrain generate --temperature 0` prints, each token from the full forward
pass over its prefix: the last line is a JSON object with "completion" and
each token's "margins" (its logit over the runner-up's).

Needs numpy, h5py and torch for /usr/bin/python3 (scripts/install_deps.sh --torch).
"""

import argparse
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import Config, MoETransformer  # noqa: E402


def checkpoint_file(path):
    """The file a --load argument names: the file, DIR/checkpoint.h5, or SAVE/latest's."""
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(path, "checkpoint.h5")):
        return os.path.join(path, "checkpoint.h5")
    with open(os.path.join(path, "latest")) as f:
        iteration = int(f.read())
    return os.path.join(path, f"iter_{iteration:07d}", "checkpoint.h5")


def read_group(group):
    """{name relative to the group: numpy array} of every dataset below it."""
    out = {}
    group.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def torch_config(m):
    """scripts/pytorch_reference/torch_model.py's Config from the checkpoint's config["model"]
    (model/config.cpp's keys; those of older checkpoints' models default when absent)."""
    d = Config()
    return Config(V=m["vocab_size"], d=m["hidden_size"], L=m["num_layers"], H=m["num_attention_heads"],
                  G=m["num_query_groups"], F=m["ffn_hidden_size"], E=m["num_experts"], K=m["moe_router_topk"],
                  S=m["seq_length"], capacity_factor=m["moe_expert_capacity_factor"],
                  aux_coeff=m["moe_aux_loss_coeff"], z_coeff=m.get("moe_z_loss_coeff", 0.0),
                  rope_theta=m["rope_theta"], norm_eps=m["norm_eps"],
                  kv_channels=m.get("kv_channels", d.kv_channels),
                  qk_layernorm=m.get("qk_layernorm", d.qk_layernorm),
                  swiglu=m.get("swiglu", d.swiglu),
                  moe_F=m.get("moe_ffn_hidden_size", d.moe_F),
                  moe_layers=tuple(m.get("moe_layer_freq", d.moe_layers)),
                  shared_F=m.get("moe_shared_expert_intermediate_size", d.shared_F),
                  shared_gate=m.get("moe_shared_expert_gate", d.shared_gate),
                  score_function=m.get("moe_router_score_function", d.score_function),
                  pre_softmax=m.get("moe_router_pre_softmax", d.pre_softmax),
                  topk_scaling=m.get("moe_router_topk_scaling_factor", d.topk_scaling),
                  num_groups=m.get("moe_router_num_groups", d.num_groups),
                  group_topk=m.get("moe_router_group_topk", d.group_topk),
                  balancing=m.get("moe_router_load_balancing_type", d.balancing),
                  expert_bias=m.get("moe_router_enable_expert_bias", d.expert_bias))


BYTE_VOCAB, EOD = 257, 256  # the byte tokenizer: ids 0..255 are bytes, 256 ends a document


def greedy_continuation(model, cfg, prompt, max_new):
    """Greedy decoding (argmax, ties to the lower id) from the full forward
    pass over the prefix padded to the context, until the end of document,
    max_new tokens or the context's end."""
    tokens = list(prompt.encode("utf-8"))
    new, margins = [], []
    with torch.no_grad():
        while len(new) < max_new and len(tokens) < cfg.S:
            sample = torch.zeros(1, cfg.S + 1, dtype=torch.int64)
            sample[0, :len(tokens)] = torch.tensor(tokens)
            _, _, logits = model(sample, return_logits=True)
            row = logits[len(tokens) - 1, :BYTE_VOCAB].double()
            token = int(torch.argmax(row))  # the first of equal maxima
            top2 = torch.topk(row, 2).values
            if token == EOD:
                break
            tokens.append(token)
            new.append(token)
            margins.append(float(top2[0] - top2[1]))
    return {"completion": bytes(new).decode("utf-8", errors="replace"), "margins": margins}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data-path", help="token store prefix (PREFIX.bin, uint16 tokens as prepare-data writes)")
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--generate", metavar="PROMPT", help="continue PROMPT greedily")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()

    path = checkpoint_file(args.checkpoint)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["config"])  # the full run configuration, a JSON string
        layout = json.loads(f.attrs["layout"])  # the layout that wrote the file
        print(f"{path}: iteration {f.attrs['iteration']}, {f.attrs['consumed_samples']} samples consumed, "
              f"format {f.attrs['format_version']}, written by TP{layout['tp']} x PP{layout['pp']} x DP{layout['dp']}")
        weights = read_group(f["model"])
        exp_avg = read_group(f["optim/exp_avg"])

    for name, w in weights.items():
        if name not in exp_avg:   # the routers' state beside the weights (expert_bias, global_aux_share)
            print(f"  {name:28} {str(w.shape):16} (router state) {np.array2string(w, precision=4)}")
            continue
        print(f"  {name:28} {str(w.shape):16} norm {np.linalg.norm(w.astype(np.float64)):11.6f}"
              f"   exp_avg norm {np.linalg.norm(exp_avg[name].astype(np.float64)):.4e}")

    cfg = torch_config(config["model"])
    model = MoETransformer(cfg)  # float32, parameters named as the datasets under /model
    with torch.no_grad():
        for name, p in model.params().items():
            p.copy_(torch.from_numpy(weights[name]))
        # aux-loss-free balancing's bias chooses the experts (global_aux_share
        # only weighs the training loss, which evaluation leaves out)
        for l, bias in model.expert_bias.items():
            bias.copy_(torch.from_numpy(weights[f"layers/{l}/expert_bias"]))
    print(f"loaded {sum(p.numel() for p in model.parameters())} parameters into "
          "scripts/pytorch_reference/torch_model.py's model")
    if args.generate is not None:
        print(json.dumps(greedy_continuation(model, cfg, args.generate, args.max_new_tokens)))
    if not args.data_path:
        return

    # Sample i is tokens [i*S, i*S + S] of the store's token stream (docs/data.md).
    tokens = np.fromfile(args.data_path + ".bin", dtype=np.uint16).astype(np.int64)
    S, n = cfg.S, args.eval_samples
    if (n * S + 1) > len(tokens):
        sys.exit(f"{args.data_path}.bin holds {len(tokens)} tokens, too few for {n} samples of {S}+1")
    ce_sum = 0.0
    with torch.no_grad():
        for first in range(0, n, args.micro_batch_size):
            rows = range(first, min(n, first + args.micro_batch_size))
            batch = torch.from_numpy(np.stack([tokens[i * S:i * S + S + 1] for i in rows]))
            ce, _ = model(batch)  # mean over the micro-batch's tokens
            ce_sum += float(ce) * len(rows) * S
    print(json.dumps({"loss": ce_sum / (n * S), "tokens": n * S, "samples": n}))


if __name__ == "__main__":
    main()
