#!/usr/bin/python3
"""Write tests/fixtures/torch_reference.h5: float64 reference values of the model of
docs/design.md section 3, computed with the independent PyTorch implementation in
scripts/pytorch_reference/torch_model.py, for the C++ tests to compare against.

Before writing, the script checks that implementation:
  * against a naive loop-by-loop NumPy forward written separately below
    (per-token RMSNorm, per-element RoPE, per-query attention, per-token routing
    with an explicit capacity counter, plain dense MLP), on every case;
  * autograd gradients against central finite differences (float64);
  * the dense path against a hand-written plain MLP;
  * the top-k tie rule (lower expert index wins);
  * float32 against float64.

Layout of the file (one group per case):
  /<case>  attrs  V d L H G F E K S B (int64), capacity_factor aux_coeff z_coeff (float64),
                  ce_loss aux_loss z_loss (float64; each a sum over MoE layers),
                  dropped (int64; assignments dropped, summed over layers),
                  plus extras: aux_per_layer [L] f64, dropped_per_layer [L] i64,
                  capacity (int64, 0 = unlimited), rope_theta norm_eps init_std (f64), seed,
                  min_topk_margin (f64, MoE cases: smallest p_(K) - p_(K+1) over tokens/layers)
           tokens  int32 [B, S+1]
           logits  float64 [B*S, V]
           model/<name>  float64, logical shape (names of docs/design.md section 6 without /model/)
           grads/<name>  float64, d(ce_loss + aux_loss + z_loss)/d(param)

Run: /usr/bin/python3 scripts/pytorch_reference/make_torch_reference.py [--out PATH]
"""

import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import Config, MoETransformer, param_shapes, topk_lower_index_ties  # noqa: E402

B = 2
INIT_STD = 0.2      # larger than the training init so attention and routing are far from uniform
GAIN_JITTER = 0.2   # norm gains ~ 1 + 0.2 N(0,1) so norm gradients are non-trivial

CASES = [
    # name, config, seed
    ("moe_mqa", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=4, K=2, S=8,
                       capacity_factor=0.0, aux_coeff=0.01), 1001),
    ("moe_gqa_capacity", Config(V=64, d=16, L=2, H=4, G=2, F=24, E=4, K=2, S=8,
                                capacity_factor=1.0, aux_coeff=0.01), 1002),
    ("moe_mqa_zloss", Config(V=64, d=16, L=2, H=4, G=1, F=24, E=4, K=2, S=8,
                             capacity_factor=0.0, aux_coeff=0.01, z_coeff=0.05), 1004),
    ("dense", Config(V=64, d=16, L=2, H=4, G=4, F=24, E=1, K=1, S=8,
                     capacity_factor=0.0, aux_coeff=0.01), 1003),
]


# ---------------------------------------------------------------------------
# naive NumPy reference forward (loops; written separately from torch_model.py)


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


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


def naive_forward(cfg, P, tokens):
    """Returns (ce, aux_total, logits [B*S, V], dropped_per_layer)."""
    Bn, S1 = tokens.shape
    S = S1 - 1
    d, H, G, hd = cfg.d, cfg.H, cfg.G, cfg.hd
    T = Bn * S
    h = np.zeros((Bn, S, d))
    for b in range(Bn):
        for t in range(S):
            h[b, t] = P["embed"][tokens[b, t]]
    aux_total = 0.0
    dropped_layers = []
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
                    q[b, t, j] = np_rope_vec(P[pre + "wq"][j * hd:(j + 1) * hd] @ a, t, cfg.rope_theta)
                for g in range(G):
                    k[b, t, g] = np_rope_vec(P[pre + "wk"][g * hd:(g + 1) * hd] @ a, t, cfg.rope_theta)
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
        if cfg.E == 1:
            for b in range(Bn):
                for t in range(S):
                    m = np_rmsnorm_vec(h[b, t], P[pre + "mlp_norm"], cfg.norm_eps)
                    h[b, t] = h[b, t] + P[pre + "mlp/w2"] @ np_gelu_tanh(P[pre + "mlp/w1"] @ m)
            dropped_layers.append(0)
        else:
            E, K = cfg.E, cfg.K
            cap = math.ceil(cfg.capacity_factor * K * T / E) if cfg.capacity_factor > 0 else None
            used = [0] * E
            chosen_count = [0] * E
            psum = np.zeros(E)
            zsum = 0.0
            dropped = 0
            out = np.zeros((Bn, S, d))
            for b in range(Bn):          # token order: row-major over (sample, position)
                for t in range(S):
                    m = np_rmsnorm_vec(h[b, t], P[pre + "mlp_norm"], cfg.norm_eps)
                    z = P[pre + "router"] @ m
                    p = np.exp(z - z.max())
                    zsum += (z.max() + math.log(p.sum())) ** 2
                    p /= p.sum()
                    psum += p
                    top = sorted(range(E), key=lambda e: (-p[e], e))[:K]
                    wsum = sum(p[e] for e in top)
                    for e in top:
                        chosen_count[e] += 1
                        used[e] += 1
                        if cap is not None and used[e] > cap:
                            dropped += 1
                            continue
                        y = P[pre + "experts/w2"][e] @ np_gelu_tanh(P[pre + "experts/w1"][e] @ m)
                        out[b, t] += (p[e] / wsum) * y
            h = h + out
            f = np.array(chosen_count) / (T * K)
            Pm = psum / T
            aux_total += cfg.aux_coeff * E * float(np.sum(f * Pm)) + cfg.z_coeff * zsum / T
            dropped_layers.append(dropped)
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
    return ce / T, aux_total, logits, dropped_layers


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


def check_dense_plain_mlp(model, tokens):
    """The dense layer's ffn must equal the hand-written gelu(m w1^T) w2^T."""
    cfg = model.cfg
    with torch.no_grad():
        m = torch.randn(5, cfg.d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        w1 = model.p("layers/0/mlp/w1")
        w2 = model.p("layers/0/mlp/w2")
        u = m @ w1.T
        c = math.sqrt(2.0 / math.pi)
        plain = (0.5 * u * (1.0 + torch.tanh(c * (u + 0.044715 * u ** 3)))) @ w2.T
        got = model.dense_ffn(0, m)
        assert torch.allclose(got, plain, rtol=1e-13, atol=1e-15), (got - plain).abs().max()


def finite_difference_check(model, tokens, grads, gen, n_per_tensor=2, h=1e-6):
    """Central differences of ce+aux on a few entries of every parameter."""
    worst = 0.0
    checked = 0
    params = model.params()
    with torch.no_grad():
        for name, prm in params.items():
            flat = prm.view(-1)
            idxs = torch.randint(0, flat.numel(), (n_per_tensor,), generator=gen).tolist()
            for i in idxs:
                old = flat[i].item()
                flat[i] = old + h
                ce_p, aux_p = model(tokens)
                routes_p = list(model.stats["dropped_layers"])
                flat[i] = old - h
                ce_m, aux_m = model(tokens)
                routes_m = list(model.stats["dropped_layers"])
                flat[i] = old
                fd = (float(ce_p + aux_p) - float(ce_m + aux_m)) / (2 * h)
                g = float(grads[name].reshape(-1)[i])
                err = abs(fd - g)
                tol = 1e-7 + 1e-5 * abs(g)
                assert routes_p == routes_m, f"routing changed while perturbing {name}[{i}]"
                assert err <= tol, f"FD mismatch {name}[{i}]: autograd {g:.12e} fd {fd:.12e}"
                worst = max(worst, err / (abs(g) + 1e-12))
                checked += 1
    return checked, worst


# ---------------------------------------------------------------------------


def build_case(name, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    model = MoETransformer(cfg, dtype=torch.float64)
    model.reset_parameters(generator=gen, std=INIT_STD, gain_jitter=GAIN_JITTER)
    tokens = torch.randint(0, cfg.V, (B, cfg.S + 1), generator=gen, dtype=torch.int64)

    model.zero_grad(set_to_none=True)
    ce, aux, logits = model(tokens, return_logits=True)
    (ce + aux).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.params().items()}
    aux_layers = list(model.stats["aux_layers"]) if cfg.moe else [0.0] * cfg.L
    z_total = sum(model.stats["z_layers"]) if cfg.moe else 0.0
    dropped_layers = list(model.stats["dropped_layers"]) if cfg.moe else [0] * cfg.L
    margin = min(model.stats["topk_margin_layers"]) if cfg.moe else float("inf")
    # routing must not hinge on rounding, so a float32 implementation routes the same
    assert margin > 1e-3, f"{name}: top-k margin {margin:.2e} too small; pick another seed"

    # 1. independent naive forward
    P = {n: p.detach().numpy().copy() for n, p in model.params().items()}
    n_ce, n_aux, n_logits, n_dropped = naive_forward(cfg, P, tokens.numpy())
    assert abs(n_ce - float(ce)) < 1e-12, (n_ce, float(ce))
    assert abs(n_aux - float(aux)) < 1e-14, (n_aux, float(aux))
    assert np.max(np.abs(n_logits - logits.detach().numpy())) < 1e-12
    assert n_dropped == dropped_layers, (n_dropped, dropped_layers)

    # 2. finite differences (float64)
    n_fd, worst = finite_difference_check(model, tokens, grads, torch.Generator().manual_seed(seed + 1))

    # 3. dense = hand-written MLP
    if not cfg.moe:
        check_dense_plain_mlp(model, tokens)

    # 4. float32 agrees with float64
    m32 = MoETransformer(cfg, dtype=torch.float32)
    with torch.no_grad():
        for n, p in m32.params().items():
            p.copy_(model.p(n))
        ce32, aux32 = m32(tokens)
    assert abs(float(ce32) - float(ce)) < 1e-4 * abs(float(ce)), (float(ce32), float(ce))
    assert abs(float(aux32) - float(aux)) < 1e-4 * max(abs(float(aux)), 1e-3)

    return dict(model=model, tokens=tokens, ce=float(ce), aux=float(aux) - z_total, z=z_total,
                logits=logits.detach().numpy(), grads=grads, aux_layers=aux_layers,
                dropped_layers=dropped_layers, n_fd=n_fd, worst_fd=worst, margin=margin)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "torch_reference.h5"))
    args = ap.parse_args()

    torch.set_default_dtype(torch.float64)
    check_tie_rule()

    results = {}
    for name, cfg, seed in CASES:
        r = build_case(name, cfg, seed)
        if name == "moe_gqa_capacity":
            assert sum(r["dropped_layers"]) > 0, "capacity case must actually drop assignments"
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
        print(f"  {name:18s} E={cfg.E} K={cfg.K} G={cfg.G} c={cfg.capacity_factor:g} "
              f"ce={r['ce']:.15f} aux={r['aux']:.15e} dropped={sum(r['dropped_layers'])} "
              f"{r['dropped_layers']}  naive-forward OK, FD {r['n_fd']} entries OK "
              f"(worst rel err {r['worst_fd']:.1e}), top-k margin {r['margin']:.1e}")


if __name__ == "__main__":
    main()
