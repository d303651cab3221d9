#!/usr/bin/python3
"""Write tests/fixtures/torch_reference.h5: float64 reference values of the model of
docs/design.md section 3, computed with the independent PyTorch implementation in
scripts/pytorch_reference/torch_model.py, for the C++ tests to compare against.

Before writing, the script checks that implementation:
  * against a naive loop-by-loop NumPy forward written separately below
    (per-token RMSNorm, per-head q/k norm, per-element RoPE, per-query
    attention, per-token routing with explicit group, bias and capacity
    bookkeeping, per-sequence load-balancing counters, plain dense and SwiGLU
    MLPs, the shared expert and its gate), on every case: losses, logits and
    each token's chosen experts;
  * autograd gradients against central finite differences (float64), with the
    routing checked unchanged by each perturbation;
  * the dense MLPs against hand-written formulas (GELU and SwiGLU);
  * the top-k tie rule (lower expert index wins) and group-limited top-k on
    hand-made rows; Megatron's softmax-over-the-chosen-logits weights against
    docs/design.md's p_k / sum of the chosen p;
  * float32 against float64, routing the same;
  * that each case exercises what it is for (drops, a bias that changes a
    choice, a shared-expert gate away from 1/2, ...).

Layout of the file (one group per case):
  /<case>  attrs  V d L H G F E K S B (int64), capacity_factor aux_coeff z_coeff (float64),
                  ce_loss aux_loss z_loss (float64; each a sum over MoE layers),
                  dropped (int64; assignments dropped, summed over layers),
                  plus extras: aux_per_layer [L] f64 (0 for dense layers), dropped_per_layer [L] i64,
                  capacity (int64, 0 = unlimited), rope_theta norm_eps init_std (f64), seed,
                  min_topk_margin (f64, MoE cases: smallest gap, over tokens and MoE layers, between
                  a chosen and an unchosen expert (or group) on the score scale: the softmax, or
                  sigmoid + bias; and of the load-balancing loss's own top-K)
                  The options of issue 33, written only where not the default (absent: default),
                  named by the model config's JSON keys (model/config.cpp):
                    kv_channels moe_ffn_hidden_size moe_shared_expert_intermediate_size
                    moe_router_num_groups moe_router_group_topk (int64),
                    qk_layernorm swiglu moe_shared_expert_gate moe_router_pre_softmax
                    moe_router_enable_expert_bias (int64 0/1),
                    moe_router_topk_scaling_factor (float64),
                    moe_layer_freq (string, Megatron's list form "[0,1,1]"),
                    moe_router_score_function moe_router_load_balancing_type (string)
                  Expert-bias cases also: bias_changed_tokens (int64, tokens whose experts the
                  bias changes, > 0), ce_loss_unbiased (float64, the loss with a zero bias)
           tokens  int32 [B, S+1]
           logits  float64 [B*S, V]
           model/<name>  float64, logical shape (names of docs/design.md section 6 without /model/)
           grads/<name>  float64, d(ce_loss + aux_loss + z_loss)/d(param)
           expert_bias/<layer>  float32 [E] (expert-bias cases; Transformer::router_state())

Run: /usr/bin/python3 scripts/pytorch_reference/make_torch_reference.py [--out PATH]
"""

import argparse
import dataclasses
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import (Config, MoETransformer, group_limited_topk, param_shapes,  # noqa: E402
                         topk_lower_index_ties)

B = 2
INIT_STD = 0.2      # larger than the training init so attention and routing are far from uniform
GAIN_JITTER = 0.2   # norm gains ~ 1 + 0.2 N(0,1) so norm gradients are non-trivial

BIAS_STD = 0.1      # expert bias ~ 0.1 N(0,1): sigmoid scores are ~0.1 apart, so it moves some choices

# The options of issue 33 as case attributes: (Config field, the model
# config's JSON key (model/config.cpp), attribute type).
OPTION_ATTRS = [
    ("kv_channels", "kv_channels", np.int64),
    ("qk_layernorm", "qk_layernorm", np.int64),
    ("swiglu", "swiglu", np.int64),
    ("moe_F", "moe_ffn_hidden_size", np.int64),
    ("moe_layers", "moe_layer_freq", str),
    ("shared_F", "moe_shared_expert_intermediate_size", np.int64),
    ("shared_gate", "moe_shared_expert_gate", np.int64),
    ("score_function", "moe_router_score_function", str),
    ("pre_softmax", "moe_router_pre_softmax", np.int64),
    ("topk_scaling", "moe_router_topk_scaling_factor", np.float64),
    ("num_groups", "moe_router_num_groups", np.int64),
    ("group_topk", "moe_router_group_topk", np.int64),
    ("balancing", "moe_router_load_balancing_type", str),
    ("expert_bias", "moe_router_enable_expert_bias", np.int64),
]

CASES = [
    # name, config, seed (the new cases' seeds are the first that keep every
    # routing margin above 1e-3 and make the case's option change a choice)
    ("moe_mqa", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=4, K=2, S=8,
                       capacity_factor=0.0, aux_coeff=0.01), 1001),
    ("moe_gqa_capacity", Config(V=64, d=16, L=2, H=4, G=2, F=24, E=4, K=2, S=8,
                                capacity_factor=1.0, aux_coeff=0.01), 1002),
    ("moe_mqa_zloss", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=4, K=2, S=8,
                             capacity_factor=0.0, aux_coeff=0.01, z_coeff=0.05), 1004),
    ("dense", Config(V=64, d=16, L=2, H=4, G=4, F=24, E=1, K=1, S=8,
                     capacity_factor=0.0, aux_coeff=0.01), 1003),
    # issue 33: the MoE layers people train today
    # dense SwiGLU, per-head q/k RMSNorm, head size 6 apart from d / H = 4
    ("dense_swiglu_qknorm", Config(V=64, d=16, L=2, H=4, G=2, F=24, E=1, K=1, S=8,
                                   kv_channels=6, qk_layernorm=True, swiglu=True), 1005),
    # Qwen2-MoE-like: first layer dense (F 24), SwiGLU experts of width 12,
    # gated shared expert of width 20, head size 8
    ("moe_swiglu_shared_gate", Config(V=64, d=16, L=3, H=4, G=1, F=24, E=4, K=2, S=8, aux_coeff=0.01,
                                      kv_channels=8, qk_layernorm=True, swiglu=True, moe_F=12,
                                      moe_layers=(0, 1, 1), shared_F=20, shared_gate=True), 1006),
    # DeepSeek-V3-like: sigmoid scores, expert bias, 12 experts in 4 groups of
    # which 2 (each scored by its best K / 2 = 2), scaling factor,
    # sequence-wise aux loss, ungated shared expert
    ("moe_sigmoid_bias_groups_seqaux", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=12, K=4, S=8,
                                              aux_coeff=0.01, moe_F=8, shared_F=16,
                                              score_function="sigmoid", expert_bias=True, num_groups=4,
                                              group_topk=2, topk_scaling=2.5, balancing="seq_aux_loss"),
     100913),
    # softmax before top-K, 8 experts in 2 groups of which 1, capacity drops,
    # global aux loss
    ("moe_presoftmax_groups_global_capacity", Config(V=64, d=16, L=2, H=4, G=2, F=24, E=8, K=2, S=8,
                                                     moe_F=12, capacity_factor=1.0, aux_coeff=0.01,
                                                     pre_softmax=True, num_groups=2, group_topk=1,
                                                     balancing="global_aux_loss"), 100801),
    # softmax after top-K with groups: Megatron ranks the groups on the
    # logits (group_limited_topk on the logits), which for some token here
    # picks another group than ranking them on the probabilities would (as
    # model/router.cpp does: tests/model/test_torch_reference.cpp runs this
    # case only in a DISABLED_ test until model/ follows Megatron)
    ("moe_softmax_groups", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=8, K=2, S=8, moe_F=12, aux_coeff=0.01,
                                  num_groups=2, group_topk=1), 101007),
    # one sigmoid pick (its weight the score itself), no balancing loss,
    # z-loss beside sigmoid scores, scaling factor
    ("moe_sigmoid_top1_none_zloss", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=4, K=1, S=8, aux_coeff=0.01,
                                           moe_F=12, z_coeff=0.05, score_function="sigmoid", topk_scaling=1.5,
                                           balancing="none"), 1009),
]


# ---------------------------------------------------------------------------
# naive NumPy reference forward (loops; written separately from torch_model.py)


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_rmsnorm_vec(x, g, eps):
    return x / math.sqrt(float(np.mean(x * x)) + eps) * g


def np_rope_vec(x, pos, theta):
    hd = x.shape[0]
    half = hd // 2
    out = np.empty_like(x)
    for i in range(half):
        ang = pos * theta ** (-2.0 * i / hd)
        c, s = math.cos(ang), math.sin(ang)
        out[i] = x[i] * c - x[i + half] * s
        out[i + half] = x[i] * s + x[i + half] * c
    return out


def np_mlp(P, prefix, x, e=None):
    """w2 gelu(w1 x), or with a w3 the SwiGLU w2 (u sigmoid(u) * (w3 x)), u = w1 x."""
    def w(name):
        return P[prefix + name] if e is None else P[prefix + name][e]
    u = w("w1") @ x
    if prefix + "w3" in P:
        hidden = u * np_sigmoid(u) * (w("w3") @ x)
    else:
        hidden = np_gelu_tanh(u)
    return w("w2") @ hidden


def np_best(values, k, allowed=None):
    """The k best indices of values (among allowed), best first; ties to the lower index."""
    candidates = [e for e in range(len(values)) if allowed is None or allowed[e]]
    return sorted(candidates, key=lambda e: (-values[e], e))[:k]


def np_route_token(cfg, z, bias):
    """One token's experts and weights from its router logits z [E], as
    DeepSeek-V3 (arXiv 2412.19437, eqs. 13-16) and Megatron's router flags
    describe them. Returns (chosen, weights, a) with a the load-balancing
    loss's scores."""
    E, K = cfg.E, cfg.K
    if cfg.score_function == "softmax":
        ex = np.exp(z - z.max())
        p = ex / ex.sum()
        # without pre_softmax Megatron ranks the logits themselves
        affinity = p if cfg.pre_softmax else z
        a = p
    else:
        s = np_sigmoid(z)
        affinity = s + (bias if bias is not None else 0.0)
        a = s / (s.sum() + 1e-20)
    allowed = None
    if cfg.num_groups:
        per = E // cfg.num_groups
        group_score = [sum(sorted(affinity[g * per:(g + 1) * per], reverse=True)[:K // cfg.group_topk])
                       for g in range(cfg.num_groups)]
        kept_groups = np_best(group_score, cfg.group_topk)
        allowed = [e // per in kept_groups for e in range(E)]
    chosen = np_best(affinity, K, allowed)
    if cfg.score_function == "softmax" and not cfg.pre_softmax:
        wsum = sum(p[e] for e in chosen)
        weights = [p[e] / wsum for e in chosen]
    elif cfg.score_function == "softmax":
        weights = [p[e] for e in chosen]
    elif K > 1:
        wsum = sum(s[e] for e in chosen) + 1e-20
        weights = [s[e] / wsum for e in chosen]
    else:
        weights = [s[e] for e in chosen]
    if cfg.topk_scaling:
        weights = [w * cfg.topk_scaling for w in weights]
    return chosen, weights, a


def naive_forward(cfg, P, tokens, expert_bias=None):
    """Returns (ce, aux_total, logits [B*S, V], dropped_per_layer, chosen experts
    per layer: [T][K] lists, None for dense layers)."""
    expert_bias = expert_bias or {}
    Bn, S1 = tokens.shape
    S = S1 - 1
    d, H, G, hd = cfg.d, cfg.H, cfg.G, cfg.hd
    T = Bn * S
    h = np.zeros((Bn, S, d))
    for b in range(Bn):
        for t in range(S):
            h[b, t] = P["embed"][tokens[b, t]]
    aux_total = 0.0
    dropped_layers, chosen_layers = [], []
    for l in range(cfg.L):
        pre = f"layers/{l}/"
        # attention
        q = np.zeros((Bn, S, H, hd))
        k = np.zeros((Bn, S, G, hd))
        v = np.zeros((Bn, S, G, hd))
        for b in range(Bn):
            for t in range(S):
                a = np_rmsnorm_vec(h[b, t], P[pre + "attn_norm"], cfg.norm_eps)
                for j in range(H):
                    qj = P[pre + "wq"][j * hd:(j + 1) * hd] @ a
                    if cfg.qk_layernorm:
                        qj = np_rmsnorm_vec(qj, P[pre + "q_norm"], cfg.norm_eps)
                    q[b, t, j] = np_rope_vec(qj, t, cfg.rope_theta)
                for g in range(G):
                    kg = P[pre + "wk"][g * hd:(g + 1) * hd] @ a
                    if cfg.qk_layernorm:
                        kg = np_rmsnorm_vec(kg, P[pre + "k_norm"], cfg.norm_eps)
                    k[b, t, g] = np_rope_vec(kg, t, cfg.rope_theta)
                    v[b, t, g] = P[pre + "wv"][g * hd:(g + 1) * hd] @ a
        new_h = h.copy()
        for b in range(Bn):
            for t in range(S):
                o = np.zeros(H * hd)
                for j in range(H):
                    g = j // (H // G)
                    sc = np.array([q[b, t, j] @ k[b, s, g] / math.sqrt(hd) for s in range(t + 1)])
                    pr = np.exp(sc - sc.max())
                    pr /= pr.sum()
                    o[j * hd:(j + 1) * hd] = sum(pr[s] * v[b, s, g] for s in range(t + 1))
                new_h[b, t] = h[b, t] + P[pre + "wo"] @ o
        h = new_h
        # ffn
        if not cfg.is_moe_layer(l):
            for b in range(Bn):
                for t in range(S):
                    m = np_rmsnorm_vec(h[b, t], P[pre + "mlp_norm"], cfg.norm_eps)
                    h[b, t] = h[b, t] + np_mlp(P, pre + "mlp/", m)
            dropped_layers.append(0)
            chosen_layers.append(None)
            continue
        E, K = cfg.E, cfg.K
        cap = math.ceil(cfg.capacity_factor * K * T / E) if cfg.capacity_factor > 0 else None
        used = [0] * E
        # the load-balancing loss's counters, per sample: its top-K choices
        # and the sum of its scores a, per expert
        choice_count = np.zeros((Bn, E))
        a_sum = np.zeros((Bn, E))
        zsum = 0.0
        dropped = 0
        chosen_tokens = []
        out = np.zeros((Bn, S, d))
        for b in range(Bn):          # token order: row-major over (sample, position)
            for t in range(S):
                m = np_rmsnorm_vec(h[b, t], P[pre + "mlp_norm"], cfg.norm_eps)
                z = P[pre + "router"] @ m
                zsum += (z.max() + math.log(np.sum(np.exp(z - z.max())))) ** 2
                chosen, weights, a = np_route_token(cfg, z, expert_bias.get(l))
                chosen_tokens.append(chosen)
                for e in np_best(a, K):
                    choice_count[b, e] += 1
                a_sum[b] += a
                for e, w in zip(chosen, weights):
                    used[e] += 1
                    if cap is not None and used[e] > cap:
                        dropped += 1
                        continue
                    out[b, t] += w * np_mlp(P, pre + "experts/", m, e)
                if cfg.shared_F:
                    y = np_mlp(P, pre + "shared_expert/", m)
                    if cfg.shared_gate:
                        y = y * float(np_sigmoid(P[pre + "shared_expert/gate"][0] @ m))
                    out[b, t] += y
        h = h + out
        if cfg.balancing == "seq_aux_loss":      # mean over samples of each one's loss
            aux = np.mean([cfg.aux_coeff * E * np.sum((choice_count[b] / (S * K)) * (a_sum[b] / S))
                           for b in range(Bn)])
        elif cfg.balancing in ("aux_loss", "global_aux_loss"):
            f = choice_count.sum(axis=0) / (T * K)
            Pm = a_sum.sum(axis=0) / T
            aux = cfg.aux_coeff * E * float(np.sum(f * Pm))
        else:
            aux = 0.0
        aux_total += aux + cfg.z_coeff * zsum / T
        dropped_layers.append(dropped)
        chosen_layers.append(chosen_tokens)
    logits = np.zeros((T, cfg.V))
    ce = 0.0
    for b in range(Bn):
        for t in range(S):
            n = np_rmsnorm_vec(h[b, t], P["final_norm"], cfg.norm_eps)
            z = P["lm_head"] @ n
            logits[b * S + t] = z
            mx = z.max()
            lse = mx + math.log(np.sum(np.exp(z - mx)))
            ce += lse - z[tokens[b, t + 1]]
    return ce / T, aux_total, logits, dropped_layers, chosen_layers


# ---------------------------------------------------------------------------
# checks


def check_tie_rule():
    p = torch.tensor([[0.1, 0.3, 0.3, 0.3],
                      [0.25, 0.25, 0.25, 0.25],
                      [0.4, 0.1, 0.4, 0.1],
                      [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    got = topk_lower_index_ties(p, 2).tolist()
    assert got == [[1, 2], [0, 1], [0, 2], [3, 2]], got
    # and in a long row where torch.topk is free to pick any of the tied ones
    p = torch.full((3, 64), 1.0 / 64, dtype=torch.float64)
    assert topk_lower_index_ties(p, 5).tolist() == [list(range(5))] * 3


def check_group_limited_topk():
    """Hand-made rows, 6 experts in 3 groups of 2, K = 2."""
    v = torch.tensor([[0.9, 0.05, 0.6, 0.55, 0.1, 0.1],
                      [0.2, 0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float64)
    # one group, scored by its best two: 0.95, 1.15, 0.2 -> group 1 only
    assert group_limited_topk(v, 2, 3, 1)[0].tolist() == [[2, 3], [0, 1]]
    # two groups, each scored by its best one: 0.9, 0.6, 0.1 -> groups 0 and 1;
    # both picks may come from one group
    assert group_limited_topk(v, 2, 3, 2)[0].tolist() == [[0, 2], [0, 1]]
    # without groups
    assert topk_lower_index_ties(v, 2).tolist() == [[0, 2], [0, 1]]


def check_softmax_weights(gen):
    """Megatron's softmax weights (the softmax over the K chosen logits) are
    docs/design.md's p_k / sum of the chosen p."""
    r = torch.randn(50, 8, generator=gen, dtype=torch.float64) * 2
    top = topk_lower_index_ties(r, 3)
    p = torch.softmax(r, dim=-1).gather(1, top)
    assert torch.allclose(torch.softmax(r.gather(1, top), dim=-1), p / p.sum(dim=-1, keepdim=True),
                          rtol=1e-14, atol=1e-16)


def check_dense_plain_mlp(model):
    """The first dense layer's MLP must equal the hand-written gelu(m w1^T) w2^T,
    or SwiGLU's (u sigmoid(u) * m w3^T) w2^T with u = m w1^T."""
    cfg = model.cfg
    l = next(l for l in range(cfg.L) if not cfg.is_moe_layer(l))
    with torch.no_grad():
        m = torch.randn(5, cfg.d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        w1 = model.p(f"layers/{l}/mlp/w1")
        w2 = model.p(f"layers/{l}/mlp/w2")
        u = m @ w1.T
        if cfg.swiglu:
            hidden = u / (1.0 + torch.exp(-u)) * (m @ model.p(f"layers/{l}/mlp/w3").T)
        else:
            c = math.sqrt(2.0 / math.pi)
            hidden = 0.5 * u * (1.0 + torch.tanh(c * (u + 0.044715 * u ** 3)))
        plain = hidden @ w2.T
        got = model.dense_ffn(l, m)
        assert torch.allclose(got, plain, rtol=1e-13, atol=1e-15), (got - plain).abs().max()


def finite_difference_check(model, tokens, grads, gen, n_per_tensor=2, h=1e-6):
    """Central differences of ce+aux on a few entries of every parameter."""
    worst = 0.0
    checked = 0
    params = model.params()
    routes = model.stats["routes"]
    with torch.no_grad():
        for name, prm in params.items():
            flat = prm.view(-1)
            idxs = torch.randint(0, flat.numel(), (n_per_tensor,), generator=gen).tolist()
            for i in idxs:
                old = flat[i].item()
                flat[i] = old + h
                ce_p, aux_p = model(tokens)
                routes_p = model.stats["routes"]
                flat[i] = old - h
                ce_m, aux_m = model(tokens)
                routes_m = model.stats["routes"]
                flat[i] = old
                fd = (float(ce_p + aux_p) - float(ce_m + aux_m)) / (2 * h)
                g = float(grads[name].reshape(-1)[i])
                err = abs(fd - g)
                tol = 1e-7 + 1e-5 * abs(g)
                assert same_routes(routes_p, routes) and same_routes(routes_m, routes), \
                    f"routing changed while perturbing {name}[{i}]"
                assert err <= tol, f"FD mismatch {name}[{i}]: autograd {g:.12e} fd {fd:.12e}"
                worst = max(worst, err / (abs(g) + 1e-12))
                checked += 1
    return checked, worst


def same_routes(routes_a, routes_b):
    """Whether two forward passes chose the same experts (and load-balancing
    choices) for every token of every MoE layer."""
    return all((ra is None and rb is None) or (torch.equal(ra[0], rb[0]) and torch.equal(ra[1], rb[1]))
               for ra, rb in zip(routes_a, routes_b))


def variant(model, dtype=torch.float64, **changes):
    """The model with the config fields in `changes` replaced (same weights and
    expert bias), in `dtype`."""
    cfg = dataclasses.replace(model.cfg, **changes)
    other = MoETransformer(cfg, dtype=dtype)
    with torch.no_grad():
        for n, p in other.params().items():
            p.copy_(model.p(n))
        for l, b in other.expert_bias.items():
            b.copy_(model.expert_bias[l])
    return other


def changed_tokens(routes_a, routes_b):
    """Tokens, over the MoE layers, whose set of experts differs."""
    n = 0
    for ra, rb in zip(routes_a, routes_b):
        if ra is not None:
            n += sum(set(x) != set(y) for x, y in zip(ra[0].tolist(), rb[0].tolist()))
    return n


def group_choice_on_probabilities_differs(model, tokens):
    """Tokens of the first MoE layer whose group-limited choice differs when
    the groups are ranked on the softmax probabilities instead of the logits
    (Megatron ranks the logits when the softmax comes after the top-K)."""
    cfg = model.cfg
    l = next(l for l in range(cfg.L) if cfg.is_moe_layer(l))
    captured = {}
    original = model.route

    def capture(layer, r):
        captured.setdefault(layer, r.detach().clone())
        return original(layer, r)

    model.route = capture
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        del model.route
    r = captured[l]
    on_logits = group_limited_topk(r, cfg.K, cfg.num_groups, cfg.group_topk)[0]
    on_probs = group_limited_topk(torch.softmax(r, dim=-1), cfg.K, cfg.num_groups, cfg.group_topk)[0]
    return sum(set(a) != set(b) for a, b in zip(on_logits.tolist(), on_probs.tolist()))


# ---------------------------------------------------------------------------


def build_case(name, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    model = MoETransformer(cfg, dtype=torch.float64)
    model.reset_parameters(generator=gen, std=INIT_STD, gain_jitter=GAIN_JITTER)
    tokens = torch.randint(0, cfg.V, (B, cfg.S + 1), generator=gen, dtype=torch.int64)
    # The bias is float32 state in the C++ model (RouterState::expert_bias),
    # so it is drawn as float32 values.
    for l in sorted(model.expert_bias):
        bias = (BIAS_STD * torch.randn(cfg.E, generator=gen, dtype=torch.float64)).float()
        model.expert_bias[l].copy_(bias.double())

    model.zero_grad(set_to_none=True)
    ce, aux, logits = model(tokens, return_logits=True)
    (ce + aux).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.params().items()}
    aux_layers = list(model.stats["aux_layers"])
    z_total = sum(model.stats["z_layers"])
    dropped_layers = list(model.stats["dropped_layers"])
    routes = model.stats["routes"]
    margin = min(model.stats["topk_margin_layers"]) if cfg.moe else float("inf")
    # routing must not hinge on rounding, so a float32 implementation routes the same
    assert margin > 1e-3, f"{name}: top-k margin {margin:.2e} too small; pick another seed"

    # 1. independent naive forward
    P = {n: p.detach().numpy().copy() for n, p in model.params().items()}
    bias_np = {l: b.numpy().copy() for l, b in model.expert_bias.items()}
    n_ce, n_aux, n_logits, n_dropped, n_chosen = naive_forward(cfg, P, tokens.numpy(), bias_np)
    assert abs(n_ce - float(ce)) < 1e-12, (n_ce, float(ce))
    assert abs(n_aux - float(aux)) < 1e-14, (n_aux, float(aux))
    assert np.max(np.abs(n_logits - logits.detach().numpy())) < 1e-12
    assert n_dropped == dropped_layers, (n_dropped, dropped_layers)
    assert n_chosen == [r and r[0].tolist() for r in routes], f"{name}: naive forward routes differently"

    # 2. finite differences (float64)
    n_fd, worst = finite_difference_check(model, tokens, grads, torch.Generator().manual_seed(seed + 1))

    # 3. dense = hand-written MLP
    if any(not cfg.is_moe_layer(l) for l in range(cfg.L)):
        check_dense_plain_mlp(model)

    # 4. float32 agrees with float64 and routes alike
    m32 = variant(model, dtype=torch.float32)
    with torch.no_grad():
        ce32, aux32 = m32(tokens)
    assert abs(float(ce32) - float(ce)) < 1e-4 * abs(float(ce)), (float(ce32), float(ce))
    assert abs(float(aux32) - float(aux)) < 1e-4 * max(abs(float(aux)), 1e-3)
    assert same_routes(m32.stats["routes"], routes), f"{name}: float32 routes differently"

    r = dict(model=model, tokens=tokens, ce=float(ce), aux=float(aux) - z_total, z=z_total,
             logits=logits.detach().numpy(), grads=grads, aux_layers=aux_layers,
             dropped_layers=dropped_layers, n_fd=n_fd, worst_fd=worst, margin=margin, notes=[])

    # 5. each option changes what it should
    with torch.no_grad():
        if cfg.expert_bias:
            # the same model without the bias: it must choose differently for
            # some token, and route as robustly
            unbiased = variant(model)
            for b in unbiased.expert_bias.values():
                b.zero_()
            ce_u, _ = unbiased(tokens)
            r["bias_changed_tokens"] = changed_tokens(routes, unbiased.stats["routes"])
            r["ce_unbiased"] = float(ce_u)
            assert r["bias_changed_tokens"] > 0, f"{name}: the bias changes no choice; pick another seed"
            assert min(unbiased.stats["topk_margin_layers"]) > 1e-3, f"{name}: unbiased margin too small"
            r["notes"].append(f"bias changes {r['bias_changed_tokens']} tokens")
        if cfg.num_groups:
            ungrouped = variant(model, num_groups=0, group_topk=0)
            ungrouped(tokens)
            n = changed_tokens(routes, ungrouped.stats["routes"])
            assert n > 0, f"{name}: the group limit changes no choice; pick another seed"
            r["notes"].append(f"groups change {n} tokens")
            if cfg.score_function == "softmax" and not cfg.pre_softmax:
                r["groups_on_probabilities_differ"] = group_choice_on_probabilities_differs(model, tokens)
                assert r["groups_on_probabilities_differ"] > 0, f"{name}: pick another seed"
                r["notes"].append(f"groups on probabilities change {r['groups_on_probabilities_differ']} tokens")
        if cfg.shared_gate:
            # the gate is not a constant factor (the gradient of the gate
            # weight is checked by FD above)
            gate_grads = [float(grads[f"layers/{l}/shared_expert/gate"].abs().max())
                          for l in range(cfg.L) if cfg.is_moe_layer(l)]
            assert min(gate_grads) > 1e-6, gate_grads
        if cfg.balancing == "seq_aux_loss":
            # per sequence differs from over the micro-batch
            whole = variant(model, balancing="aux_loss")
            _, aux_whole = whole(tokens)
            assert abs(float(aux_whole) - float(aux)) > 1e-6
        if cfg.balancing == "none":
            assert sum(aux_layers) == 0.0
    return r


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "torch_reference.h5"))
    args = ap.parse_args()

    torch.set_default_dtype(torch.float64)
    check_tie_rule()
    check_group_limited_topk()
    check_softmax_weights(torch.Generator().manual_seed(5))

    results = {}
    for name, cfg, seed in CASES:
        r = build_case(name, cfg, seed)
        if cfg.capacity_factor > 0:
            assert sum(r["dropped_layers"]) > 0, f"{name}: a capacity case must actually drop assignments"
        else:
            assert sum(r["dropped_layers"]) == 0
        results[name] = (cfg, seed, r)

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["description"] = ("moetrain float64 reference values from "
                                  "scripts/pytorch_reference/torch_model.py (docs/design.md section 3); "
                                  "written by scripts/pytorch_reference/make_torch_reference.py")
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["cases"] = np.array([n for n, _, _ in CASES], dtype=h5py.string_dtype())
        for name, (cfg, seed, r) in results.items():
            g = f.create_group(name)
            for key in ("V", "d", "L", "H", "G", "F", "E", "K", "S"):
                g.attrs[key] = np.int64(getattr(cfg, key))
            g.attrs["B"] = np.int64(B)
            g.attrs["capacity_factor"] = np.float64(cfg.capacity_factor)
            g.attrs["aux_coeff"] = np.float64(cfg.aux_coeff)
            g.attrs["z_coeff"] = np.float64(cfg.z_coeff)
            g.attrs["ce_loss"] = np.float64(r["ce"])
            g.attrs["aux_loss"] = np.float64(r["aux"])
            g.attrs["z_loss"] = np.float64(r["z"])
            g.attrs["dropped"] = np.int64(sum(r["dropped_layers"]))
            g.attrs["aux_per_layer"] = np.array(r["aux_layers"], dtype=np.float64)
            g.attrs["dropped_per_layer"] = np.array(r["dropped_layers"], dtype=np.int64)
            T = B * cfg.S
            cap = math.ceil(cfg.capacity_factor * cfg.K * T / cfg.E) \
                if (cfg.moe and cfg.capacity_factor > 0) else 0
            g.attrs["capacity"] = np.int64(cap)
            g.attrs["rope_theta"] = np.float64(cfg.rope_theta)
            g.attrs["norm_eps"] = np.float64(cfg.norm_eps)
            g.attrs["init_std"] = np.float64(INIT_STD)
            g.attrs["seed"] = np.int64(seed)
            if cfg.moe:
                g.attrs["min_topk_margin"] = np.float64(r["margin"])
            defaults = Config()
            for field, key, kind in OPTION_ATTRS:
                value = getattr(cfg, field)
                if value == getattr(defaults, field):
                    continue   # absent = the default, as in the cases written before these options
                if field == "moe_layers":
                    g.attrs[key] = "[" + ",".join(str(int(x)) for x in value) + "]"
                else:
                    g.attrs[key] = kind(value)
            if cfg.expert_bias:
                g.attrs["bias_changed_tokens"] = np.int64(r["bias_changed_tokens"])
                g.attrs["ce_loss_unbiased"] = np.float64(r["ce_unbiased"])
                for l, b in r["model"].expert_bias.items():
                    g.create_dataset(f"expert_bias/{l}", data=b.numpy().astype(np.float32))
            if "groups_on_probabilities_differ" in r:
                g.attrs["groups_on_probabilities_differ"] = np.int64(r["groups_on_probabilities_differ"])
            g.create_dataset("tokens", data=r["tokens"].numpy().astype(np.int32))
            g.create_dataset("logits", data=r["logits"].astype(np.float64))
            for pname, shape in param_shapes(cfg).items():
                pv = r["model"].p(pname).detach().numpy().astype(np.float64)
                gv = r["grads"][pname].numpy().astype(np.float64)
                assert pv.shape == tuple(shape) and gv.shape == tuple(shape)
                g.create_dataset("model/" + pname, data=pv)
                g.create_dataset("grads/" + pname, data=gv)
    os.replace(tmp, out)

    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    for name, (cfg, seed, r) in results.items():
        print(f"  {name:38s} E={cfg.E} K={cfg.K} G={cfg.G} c={cfg.capacity_factor:g} "
              f"ce={r['ce']:.15f} aux={r['aux']:.15e} dropped={sum(r['dropped_layers'])} "
              f"{r['dropped_layers']}  naive-forward OK, FD {r['n_fd']} entries OK "
              f"(worst rel err {r['worst_fd']:.1e}), top-k margin {r['margin']:.1e} "
              + " ".join(r["notes"]))


if __name__ == "__main__":
    main()
