#!/usr/bin/python3
"""Independent PyTorch implementation of the moetrain model (docs/design.md section 3).

Written straight from the math in docs/design.md, not from the C++ code. It serves
two purposes:

  * reference values for the C++ tests (scripts/pytorch_reference/make_torch_reference.py, float64);
  * the PyTorch-eager baseline for throughput benchmarks (scripts/pytorch_reference/bench_torch.py,
    float32).

Parameters are registered under exactly the checkpoint names of docs/design.md
section 6 without the "/model/" prefix, so ``model.named_parameters()`` yields
``embed``, ``layers/0/wq``, ..., ``lm_head``.

Use Debian's system python (``/usr/bin/python3``), which has torch installed.
"""

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    V: int = 64                  # vocabulary
    d: int = 16                  # width
    L: int = 2                   # layers
    H: int = 4                   # query heads
    G: int = 1                   # key/value heads (G = 1: multi-query attention)
    F: int = 24                  # (expert) MLP hidden size
    E: int = 4                   # experts (E = 1: dense MLP)
    K: int = 2                   # router top-k
    S: int = 8                   # sequence length
    capacity_factor: float = 0.0  # c; 0 drops nothing
    aux_coeff: float = 0.01      # alpha
    z_coeff: float = 0.0         # router z-loss c (docs/design.md section 8)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def hd(self):
        return self.d // self.H

    @property
    def moe(self):
        return self.E > 1

    def check(self):
        assert self.d % self.H == 0, "d must divide by H"
        assert self.H % self.G == 0, "H must divide by G"
        assert self.hd % 2 == 0, "head size must be even for RoPE"
        if self.moe:
            assert 1 <= self.K <= self.E, "need 1 <= K <= E"

    def as_dict(self):
        return asdict(self)


def param_shapes(cfg):
    """Ordered {name: shape} of every parameter, as in docs/design.md section 6."""
    d, hd = cfg.d, cfg.hd
    shapes = {"embed": (cfg.V, d)}
    for l in range(cfg.L):
        p = f"layers/{l}/"
        shapes[p + "attn_norm"] = (d,)
        shapes[p + "wq"] = (cfg.H * hd, d)
        shapes[p + "wk"] = (cfg.G * hd, d)
        shapes[p + "wv"] = (cfg.G * hd, d)
        shapes[p + "wo"] = (d, cfg.H * hd)
        shapes[p + "mlp_norm"] = (d,)
        if cfg.moe:
            shapes[p + "router"] = (cfg.E, d)
            shapes[p + "experts/w1"] = (cfg.E, cfg.F, d)
            shapes[p + "experts/w2"] = (cfg.E, d, cfg.F)
        else:
            shapes[p + "mlp/w1"] = (cfg.F, d)
            shapes[p + "mlp/w2"] = (d, cfg.F)
    shapes["final_norm"] = (d,)
    shapes["lm_head"] = (cfg.V, d)
    return shapes


def is_norm(name):
    return name.endswith("norm")


def is_output_proj(name):
    return name.endswith("/wo") or name.endswith("/w2")


# ---------------------------------------------------------------------------
# building blocks


def rmsnorm(x, g, eps):
    """x / sqrt(mean(x^2) + eps) * g over the last dimension."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * g


def rope_tables(S, hd, theta, dtype, device=None):
    """cos/sin tables [S, hd/2] for positions 0..S-1, computed in float64."""
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64, device=device)
    inv_freq = theta ** (-2.0 * i / hd)                     # theta_i
    pos = torch.arange(S, dtype=torch.float64, device=device)
    ang = pos[:, None] * inv_freq[None, :]                  # p * theta_i
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE. x: [B, heads, S, hd]; pair (x_i, x_{i+hd/2})."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def gelu(x):
    return F.gelu(x, approximate="tanh")


def topk_lower_index_ties(p, K):
    """Indices [T, K] of the K largest entries per row; ties go to the lower index.

    A stable sort on -p keeps equal values in ascending index order, which is
    exactly the tie rule (torch.topk makes no such promise).
    """
    order = torch.sort(-p, dim=-1, stable=True).indices
    return order[:, :K]


# ---------------------------------------------------------------------------
# the model


class MoETransformer(nn.Module):
    def __init__(self, cfg: Config, dtype=torch.float32, device=None):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        for name, shape in param_shapes(cfg).items():
            # '/' is a legal parameter name for register_parameter, so
            # named_parameters() gives the checkpoint names directly.
            self.register_parameter(
                name, nn.Parameter(torch.empty(shape, dtype=dtype, device=device)))
        self.reset_parameters()
        self.stats = {}

    # -- parameters ---------------------------------------------------------

    def p(self, name):
        return getattr(self, name)

    def params(self):
        """{checkpoint name (without /model/): parameter}, in schema order."""
        return {n: self.p(n) for n in param_shapes(self.cfg)}

    @torch.no_grad()
    def reset_parameters(self, generator=None, std=0.02, gain_jitter=0.0,
                         scale_output_proj=True):
        """Random init: normal(0, std) for weights (wo/w2 scaled by 1/sqrt(2L)
        when scale_output_proj), norm gains 1 (+ gain_jitter * normal, to make
        norm gradients non-trivial in reference data)."""
        for name, prm in self.params().items():
            if is_norm(name):
                prm.fill_(1.0)
                if gain_jitter:
                    prm.add_(gain_jitter * torch.randn(prm.shape, generator=generator,
                                                       dtype=torch.float64).to(prm))
            else:
                s = std
                if scale_output_proj and is_output_proj(name):
                    s = std / math.sqrt(2 * self.cfg.L)
                prm.copy_(s * torch.randn(prm.shape, generator=generator,
                                          dtype=torch.float64).to(prm))

    # -- layers -------------------------------------------------------------

    def attention(self, l, a, cos, sin):
        cfg = self.cfg
        B, S, _ = a.shape
        hd, H, G = cfg.hd, cfg.H, cfg.G
        pre = f"layers/{l}/"
        q = (a @ self.p(pre + "wq").t()).view(B, S, H, hd).transpose(1, 2)
        k = (a @ self.p(pre + "wk").t()).view(B, S, G, hd).transpose(1, 2)
        v = (a @ self.p(pre + "wv").t()).view(B, S, G, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # query head j reads kv head j // (H // G)
        rep = H // G
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)     # [B, H, S, S]
        causal = torch.ones(S, S, dtype=torch.bool, device=a.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        o = torch.softmax(scores, dim=-1) @ v                   # [B, H, S, hd]
        o = o.transpose(1, 2).reshape(B, S, H * hd)
        return o @ self.p(pre + "wo").t()

    def dense_ffn(self, l, m):
        pre = f"layers/{l}/mlp/"
        return gelu(m @ self.p(pre + "w1").t()) @ self.p(pre + "w2").t()

    def moe_ffn(self, l, m):
        """m: [T, d] with tokens in order (row-major over sample, position).

        Returns (out [T, d], aux scalar, z-loss scalar, number of dropped assignments)."""
        cfg = self.cfg
        T = m.shape[0]
        E, K = cfg.E, cfg.K
        pre = f"layers/{l}/"
        w1, w2 = self.p(pre + "experts/w1"), self.p(pre + "experts/w2")

        r = m @ self.p(pre + "router").t()                              # [T, E] router logits
        p = torch.softmax(r, dim=-1)                                   # [T, E]
        z = cfg.z_coeff * (torch.logsumexp(r, dim=-1) ** 2).mean()
        top = topk_lower_index_ties(p.detach(), K)                     # [T, K]
        if K < E:   # smallest gap between the K-th and (K+1)-th probability
            ps = torch.sort(p.detach(), dim=-1, descending=True).values
            self._margin = float((ps[:, K - 1] - ps[:, K]).min())
        else:
            self._margin = float("inf")
        ptop = p.gather(1, top)
        wts = ptop / ptop.sum(dim=-1, keepdim=True)                    # [T, K]

        # Flatten the T*K assignments as t*K + k (token order), then group them
        # by expert with a stable sort: inside each expert they stay in token
        # order, whatever the k-slot.
        flat_e = top.reshape(-1)
        order = torch.sort(flat_e, stable=True).indices                # [T*K]
        counts = torch.bincount(flat_e, minlength=E)                   # before drops
        starts = torch.cumsum(counts, 0) - counts
        if cfg.capacity_factor > 0:
            cap = math.ceil(cfg.capacity_factor * K * T / E)           # Python float = double
            rank = torch.arange(T * K, device=m.device) - starts.repeat_interleave(counts)
            keep_sorted = rank < cap
        else:
            keep_sorted = torch.ones(T * K, dtype=torch.bool, device=m.device)
        dropped = int((~keep_sorted).sum())

        flat_w = wts.reshape(-1)
        out = torch.zeros_like(m)
        counts_l = counts.tolist()
        for e in range(E):
            s, n = int(starts[e]), counts_l[e]
            if n == 0:
                continue
            idx = order[s:s + n][keep_sorted[s:s + n]]                 # assignment ids
            if idx.numel() == 0:
                continue
            tok = torch.div(idx, K, rounding_mode="floor")
            x = m.index_select(0, tok)                                 # [n_e, d]
            y = gelu(x @ w1[e].t()) @ w2[e].t()                        # [n_e, d]
            # (under autocast y is bf16: added in out's dtype)
            out.index_add_(0, tok, (y * flat_w.index_select(0, idx).unsqueeze(1)).to(out.dtype))

        # load-balancing loss: f_e (detached, before drops), P_e (with grad)
        f = counts.to(p.dtype) / (T * K)
        P = p.mean(dim=0)
        aux = cfg.aux_coeff * E * (f * P).sum()
        return out, aux, z, dropped

    # -- forward --------------------------------------------------------------

    def forward(self, tokens, return_logits=False):
        """tokens [B, S+1] int64 -> (ce, aux_total); trained loss is ce + aux_total,
        aux_total the router losses (load balancing and z-loss) of every layer.

        Per-layer aux, z and dropped counts land in self.stats."""
        cfg = self.cfg
        x, y = tokens[:, :-1], tokens[:, 1:]
        B, S = x.shape
        dtype = self.p("embed").dtype
        cos, sin = rope_tables(S, cfg.hd, cfg.rope_theta, dtype, tokens.device)

        h = self.p("embed")[x]                                         # [B, S, d]
        aux_total = torch.zeros((), dtype=dtype, device=tokens.device)
        aux_layers, z_layers, dropped_layers, margins = [], [], [], []
        for l in range(cfg.L):
            pre = f"layers/{l}/"
            a = rmsnorm(h, self.p(pre + "attn_norm"), cfg.norm_eps)
            h = h + self.attention(l, a, cos, sin)
            m = rmsnorm(h, self.p(pre + "mlp_norm"), cfg.norm_eps)
            if cfg.moe:
                out, aux, z, dropped = self.moe_ffn(l, m.reshape(B * S, cfg.d))
                h = h + out.view(B, S, cfg.d)
                aux_total = aux_total + aux + z
                aux_layers.append(float(aux))
                z_layers.append(float(z))
                dropped_layers.append(dropped)
                margins.append(self._margin)
            else:
                h = h + self.dense_ffn(l, m)
        n = rmsnorm(h, self.p("final_norm"), cfg.norm_eps)
        logits = (n @ self.p("lm_head").t()).reshape(B * S, cfg.V)
        ce = F.cross_entropy(logits, y.reshape(B * S))
        self.stats = {"aux_layers": aux_layers, "z_layers": z_layers, "dropped_layers": dropped_layers,
                      "topk_margin_layers": margins}
        if return_logits:
            return ce, aux_total, logits
        return ce, aux_total


# ---------------------------------------------------------------------------
# training helpers (bench)


def make_adamw(model, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """AdamW with decoupled weight decay on parameters of two or more dims only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=betas, eps=eps)


def train_step(model, opt, micro_batches, clip=1.0):
    """One optimizer step over a global batch given as a list of [b, S+1] micro-batches.

    Loss = mean CE over all tokens (equal-size micro-batches) + mean over
    micro-batches of the summed aux. Returns (ce, aux, grad_norm) as floats."""
    opt.zero_grad(set_to_none=True)
    n = len(micro_batches)
    ce_sum, aux_sum = 0.0, 0.0
    for mb in micro_batches:
        ce, aux = model(mb)
        ((ce + aux) / n).backward()
        ce_sum += float(ce.detach())
        aux_sum += float(aux.detach())
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip) if clip > 0 else None
    opt.step()
    return ce_sum / n, aux_sum / n, (float(norm) if norm is not None else float("nan"))
