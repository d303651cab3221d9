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

The MoE layers people train today (issue 33) are written from Megatron-LM's
definitions (megatron/core/transformer/moe/moe_utils.py, router.py,
shared_experts.py; transformer_config.py for the flags) and the papers they
cite: SwiGLU MLPs, a head size apart from d / H (--kv-channels), RMSNorm over
each head's query and key (--qk-layernorm), dense layers among MoE layers
(--moe-layer-freq), the experts' own width (--moe-ffn-hidden-size), a shared
expert with Qwen2-MoE's sigmoid gate, softmax or sigmoid router scores,
pre-softmax routing, the top-k scaling factor, group-limited routing
(DeepSeek-V2/V3), the expert bias of aux-loss-free balancing (arXiv
2408.15664, DeepSeek-V3 arXiv 2412.19437) and the aux_loss / seq_aux_loss /
global_aux_loss / none load-balancing losses. Where Megatron leaves a choice
open, the project's convention is taken and said so at the place.

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
    F: int = 24                  # MLP hidden size (dense layers; experts unless moe_F)
    E: int = 4                   # experts (E = 1: dense MLP)
    K: int = 2                   # router top-k
    S: int = 8                   # sequence length
    capacity_factor: float = 0.0  # c; 0 drops nothing
    aux_coeff: float = 0.01      # alpha
    z_coeff: float = 0.0         # router z-loss c (docs/design.md section 8)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # -- issue 33 (Megatron flag in brackets); the defaults are the model above
    kv_channels: int = 0         # head size hd [--kv-channels]; 0: d // H
    qk_layernorm: bool = False   # RMSNorm over each head's q and k before RoPE [--qk-layernorm]
    swiglu: bool = False         # MLPs w2(silu(w1 x) * (w3 x)) [--swiglu]
    moe_F: int = 0               # a routed expert's hidden size [--moe-ffn-hidden-size]; 0: F
    moe_layers: tuple = ()       # per layer 1 = MoE, 0 = dense [--moe-layer-freq]; (): all MoE
    shared_F: int = 0            # shared expert's hidden size [--moe-shared-expert-intermediate-size]; 0: none
    shared_gate: bool = False    # sigmoid gate on the shared expert [--moe-shared-expert-gate]
    score_function: str = "softmax"  # or "sigmoid" [--moe-router-score-function]
    pre_softmax: bool = False    # softmax before top-k [--moe-router-pre-softmax]
    topk_scaling: float = 0.0    # weights times this [--moe-router-topk-scaling-factor]; 0: none
    num_groups: int = 0          # expert groups [--moe-router-num-groups]; 0: no group limit
    group_topk: int = 0          # groups a token may use [--moe-router-group-topk]
    # aux_loss | seq_aux_loss | global_aux_loss | none [--moe-router-load-balancing-type]
    balancing: str = "aux_loss"
    expert_bias: bool = False    # per-expert routing bias [--moe-router-enable-expert-bias]

    @property
    def hd(self):
        return self.kv_channels if self.kv_channels > 0 else self.d // self.H

    @property
    def moe(self):
        return self.E > 1

    @property
    def expert_F(self):
        return self.moe_F if self.moe_F > 0 else self.F

    def is_moe_layer(self, l):
        return self.moe and (len(self.moe_layers) == 0 or self.moe_layers[l] != 0)

    def check(self):
        assert self.kv_channels > 0 or self.d % self.H == 0, "d must divide by H (or give kv_channels)"
        assert self.H % self.G == 0, "H must divide by G"
        assert self.hd % 2 == 0, "head size must be even for RoPE"
        if self.moe:
            assert 1 <= self.K <= self.E, "need 1 <= K <= E"
        assert len(self.moe_layers) in (0, self.L), "moe_layers needs one entry per layer"
        assert self.moe or (not self.moe_layers and not self.shared_F and not self.moe_F)
        assert not self.shared_gate or self.shared_F > 0, "the gate gates the shared expert"
        assert self.score_function in ("softmax", "sigmoid")
        assert self.balancing in ("aux_loss", "seq_aux_loss", "global_aux_loss", "none")
        # Megatron's TransformerConfig: the bias only on sigmoid scores.
        assert not self.expert_bias or self.score_function == "sigmoid", "expert bias needs sigmoid scores"
        assert (self.num_groups > 0) == (self.group_topk > 0)
        if self.num_groups:
            assert self.E % self.num_groups == 0 and self.group_topk <= self.num_groups
            # each chosen group is scored by its best K / group_topk experts
            assert self.K % self.group_topk == 0 and self.K // self.group_topk <= self.E // self.num_groups

    def as_dict(self):
        return asdict(self)


def param_shapes(cfg):
    """Ordered {name: shape} of every parameter, as in docs/design.md section 6
    (model/parameters.cpp's param_table order)."""
    d, hd = cfg.d, cfg.hd

    def mlp(prefix, f, experts=()):
        # SwiGLU's w3 has w1's shape; experts carry the expert in dimension 0
        shapes[prefix + "w1"] = experts + (f, d)
        if cfg.swiglu:
            shapes[prefix + "w3"] = experts + (f, d)
        shapes[prefix + "w2"] = experts + (d, f)

    shapes = {"embed": (cfg.V, d)}
    for l in range(cfg.L):
        p = f"layers/{l}/"
        shapes[p + "attn_norm"] = (d,)
        shapes[p + "wq"] = (cfg.H * hd, d)
        shapes[p + "wk"] = (cfg.G * hd, d)
        shapes[p + "wv"] = (cfg.G * hd, d)
        if cfg.qk_layernorm:
            shapes[p + "q_norm"] = (hd,)   # one gain vector shared by the heads
            shapes[p + "k_norm"] = (hd,)
        shapes[p + "wo"] = (d, cfg.H * hd)
        shapes[p + "mlp_norm"] = (d,)
        if cfg.is_moe_layer(l):
            shapes[p + "router"] = (cfg.E, d)
            mlp(p + "experts/", cfg.expert_F, (cfg.E,))
            if cfg.shared_F:
                mlp(p + "shared_expert/", cfg.shared_F)
            if cfg.shared_gate:
                shapes[p + "shared_expert/gate"] = (1, d)
        else:
            mlp(p + "mlp/", cfg.F)
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


def mlp(x, w1, w2, w3=None):
    """gelu(x w1^T) w2^T, or with w3 SwiGLU's w2(silu(w1 x) * (w3 x)).

    Megatron's gated linear unit (--swiglu) chunks linear_fc1's output in two
    halves and computes silu(first) * second: w1 is the first half, w3 the
    second (Shazeer, "GLU Variants Improve Transformer", arXiv 2002.05202)."""
    u = x @ w1.t()
    if w3 is None:
        return gelu(u) @ w2.t()
    return (F.silu(u) * (x @ w3.t())) @ w2.t()


def group_limited_topk(v, K, num_groups, group_topk):
    """Megatron's group_limited_topk on selection values v [T, E]: experts in
    num_groups equal groups; a group's score is the sum of its best
    K // group_topk values; a token keeps its group_topk best groups and picks
    its K best experts among theirs (DeepSeek-V2's device-limited, V3's
    node-limited routing). Ties to the lower index, as everywhere here.

    Returns (top [T, K], allowed [T, E] bool, group_scores [T, num_groups],
    best_groups [T, group_topk])."""
    T, E = v.shape
    per = E // num_groups
    best_of_group = torch.sort(v.view(T, num_groups, per), dim=-1, descending=True, stable=True).values
    group_scores = best_of_group[..., :K // group_topk].sum(dim=-1)
    best_groups = topk_lower_index_ties(group_scores, group_topk)
    group_mask = torch.zeros(T, num_groups, dtype=torch.bool, device=v.device)
    group_mask.scatter_(1, best_groups, True)
    allowed = group_mask.repeat_interleave(per, dim=1)
    top = topk_lower_index_ties(v.masked_fill(~allowed, float("-inf")), K)
    return top, allowed, group_scores, best_groups


def topk_gap(values, chosen, allowed=None):
    """Per row, the smallest chosen value minus the largest unchosen allowed
    one: how far a choice is from flipping (inf when nothing is left out)."""
    chosen_mask = torch.zeros_like(values, dtype=torch.bool).scatter(1, chosen, True)
    rest = ~chosen_mask if allowed is None else (~chosen_mask & allowed)
    low = values.masked_fill(~chosen_mask, float("inf")).min(dim=1).values
    high = values.masked_fill(~rest, float("-inf")).max(dim=1).values
    return low - high


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
        # Aux-loss-free balancing's per-expert bias of each MoE layer: state
        # beside the weights, not a parameter (no gradient; Megatron keeps it
        # as a float32 buffer updated after each step). Zero until set.
        self.expert_bias = {l: torch.zeros(cfg.E, dtype=dtype, device=device)
                            for l in range(cfg.L) if cfg.expert_bias and cfg.is_moe_layer(l)}
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
        q = (a @ self.p(pre + "wq").t()).view(B, S, H, hd)
        k = (a @ self.p(pre + "wk").t()).view(B, S, G, hd)
        v = (a @ self.p(pre + "wv").t()).view(B, S, G, hd).transpose(1, 2)
        if cfg.qk_layernorm:
            # Megatron's q_layernorm / k_layernorm: the model's norm (RMSNorm)
            # over each head's hd values, one gain vector for all heads,
            # applied to the projections before RoPE.
            q = rmsnorm(q, self.p(pre + "q_norm"), cfg.norm_eps)
            k = rmsnorm(k, self.p(pre + "k_norm"), cfg.norm_eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
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

    def mlp_of(self, prefix, x, expert=None):
        """The MLP whose weights are under prefix (an expert's slice when given)."""
        w = [self.p(prefix + n) for n in ("w1", "w2")] + \
            ([self.p(prefix + "w3")] if self.cfg.swiglu else [])
        if expert is not None:
            w = [t[expert] for t in w]
        return mlp(x, *w)

    def dense_ffn(self, l, m):
        return self.mlp_of(f"layers/{l}/mlp/", m)

    def route(self, l, r):
        """Megatron's topk_routing_with_score_function on the router logits r
        [T, E]: which experts each token picks (top [T, K], best first) and
        their weights [T, K]; plus how far each choice is from flipping.

        softmax: top-K of the logits, the weights the softmax over the K
          chosen logits (= p_k / sum of the chosen p); with pre_softmax
          the softmax over all E first, top-K of it, the weights p_k as they
          are (not renormalised).
        sigmoid: s = sigmoid(r); top-K of s + bias (the bias only chooses,
          arXiv 2408.15664 eq. 3, DeepSeek-V3 eq. 16); the weights
          s_k / (sum of the chosen s + 1e-20) for K > 1, s_k for K = 1.
        Group-limited routing picks among the best groups of the values the
        top-K runs on (the logits, the softmax, or s + bias). The weights are
        finally times the top-k scaling factor, when set. pre_softmax does
        nothing to sigmoid scores (Megatron's sigmoid branch ignores it)."""
        cfg = self.cfg
        K = cfg.K
        bias = self.expert_bias.get(l)
        if cfg.score_function == "softmax":
            scores = torch.softmax(r, dim=-1)
            select_on = scores if cfg.pre_softmax else r
        else:
            scores = torch.sigmoid(r)
            select_on = scores + bias if bias is not None else scores
        select_on = select_on.detach()   # choosing is not differentiable
        if cfg.num_groups:
            top, allowed, group_scores, best_groups = group_limited_topk(
                select_on, K, cfg.num_groups, cfg.group_topk)
            group_gap = topk_gap(group_scores, best_groups)
        else:
            top = topk_lower_index_ties(select_on, K)
            allowed, group_gap = None, torch.full((r.shape[0],), float("inf"), dtype=r.dtype)
        if cfg.score_function == "softmax" and not cfg.pre_softmax:
            w = torch.softmax(r.gather(1, top), dim=-1)
        else:
            w = scores.gather(1, top)
            if cfg.score_function == "sigmoid" and K > 1:
                w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        if cfg.topk_scaling:
            w = w * cfg.topk_scaling
        # How far from flipping, on the probability scale the existing cases
        # use: the softmax (same order as the logits within a token) or
        # s + bias; and the group choice on the values it was made on.
        scale = scores.detach() if cfg.score_function == "softmax" else select_on
        gap = topk_gap(scale, top, allowed)
        return top, w, float(torch.minimum(gap, group_gap).min())

    def load_balancing_loss(self, r):
        """The layer's load-balancing loss and its top-K choices, as Megatron's
        compute_routing_scores_for_aux_loss + switch_load_balancing_loss_func:
        a = softmax(r), or sigmoid(r) / (sum_e sigmoid(r)_e + 1e-20); each
        token's top-K of a (no bias, no groups) counted per expert, count_e;
        loss = alpha E / (K T^2) sum_e count_e sum_t a_te = alpha E sum_e f_e P_e.

        seq_aux_loss (Megatron's _apply_seq_aux_loss, DeepSeek-V2/V3's
        sequence-wise loss): the same over each sample's S tokens, averaged
        over the samples (Megatron divides the sum over sequences by bsz).
        global_aux_loss: count_e of the global batch so far (Megatron's
        global_tokens_per_expert / ga_steps); in a single forward pass after
        a reset that is this micro-batch's own count, so it equals aux_loss.
        none: no loss. f_e carries no gradient; a does.

        Returns (loss, choices [T, K], min gap of the choices)."""
        cfg = self.cfg
        T, E, K = r.shape[0], cfg.E, cfg.K
        if cfg.score_function == "softmax":
            a = torch.softmax(r, dim=-1)
        else:
            s = torch.sigmoid(r)
            a = s / (s.sum(dim=-1, keepdim=True) + 1e-20)
        choices = topk_lower_index_ties(a.detach(), K)
        gap = float(topk_gap(a.detach(), choices).min()) if K < E else float("inf")
        if cfg.balancing == "none":
            return torch.zeros((), dtype=r.dtype, device=r.device), choices, float("inf")
        routing_map = torch.zeros_like(a).scatter(1, choices, 1.0)
        if cfg.balancing == "seq_aux_loss":
            n = T // cfg.S   # tokens are ordered by sample, then position
            per_seq = (a.view(n, cfg.S, E).sum(dim=1) * routing_map.view(n, cfg.S, E).sum(dim=1)).sum(dim=-1)
            loss = per_seq.sum() * (E * cfg.aux_coeff / (K * cfg.S * cfg.S)) / n
        else:
            loss = (a.sum(dim=0) * routing_map.sum(dim=0)).sum() * (E * cfg.aux_coeff / (K * T * T))
        return loss, choices, gap

    def moe_ffn(self, l, m):
        """m: [T, d] with tokens in order (row-major over sample, position).

        Returns (out [T, d], aux scalar, z-loss scalar, number of dropped assignments)."""
        cfg = self.cfg
        T = m.shape[0]
        E, K = cfg.E, cfg.K
        pre = f"layers/{l}/"

        r = m @ self.p(pre + "router").t()                              # [T, E] router logits
        z = cfg.z_coeff * (torch.logsumexp(r, dim=-1) ** 2).mean()
        top, wts, margin = self.route(l, r)                            # [T, K] each
        aux, aux_choices, aux_margin = self.load_balancing_loss(r)
        self._margin = min(margin, aux_margin)
        self._routes = (top, aux_choices)   # for the reference script's checks

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
            y = self.mlp_of(pre + "experts/", x, expert=e)             # [n_e, d]
            # (under autocast y is bf16: added in out's dtype)
            out.index_add_(0, tok, (y * flat_w.index_select(0, idx).unsqueeze(1)).to(out.dtype))

        if cfg.shared_F:
            # Megatron's SharedExpertMLP on the same input, added to the routed
            # output; with the gate (Qwen2-MoE's shared_expert_gate, a
            # Linear(d, 1) without bias) times sigmoid(m gate^T) per token.
            y = self.mlp_of(pre + "shared_expert/", m)
            if cfg.shared_gate:
                y = y * torch.sigmoid(m @ self.p(pre + "shared_expert/gate").t())
            out = out + y.to(out.dtype)
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
        aux_layers, z_layers, dropped_layers, margins, routes = [], [], [], [], []
        for l in range(cfg.L):
            pre = f"layers/{l}/"
            a = rmsnorm(h, self.p(pre + "attn_norm"), cfg.norm_eps)
            h = h + self.attention(l, a, cos, sin)
            m = rmsnorm(h, self.p(pre + "mlp_norm"), cfg.norm_eps)
            if cfg.is_moe_layer(l):
                out, aux, z, dropped = self.moe_ffn(l, m.reshape(B * S, cfg.d))
                h = h + out.view(B, S, cfg.d)
                aux_total = aux_total + aux + z
                aux_layers.append(float(aux))
                z_layers.append(float(z))
                dropped_layers.append(dropped)
                margins.append(self._margin)
                routes.append(self._routes)
            else:
                h = h + self.dense_ffn(l, m)
                aux_layers.append(0.0)
                z_layers.append(0.0)
                dropped_layers.append(0)
                routes.append(None)
        n = rmsnorm(h, self.p("final_norm"), cfg.norm_eps)
        logits = (n @ self.p("lm_head").t()).reshape(B * S, cfg.V)
        ce = F.cross_entropy(logits, y.reshape(B * S))
        # per layer (0 / None for dense layers; routes: (experts [T, K], the
        # load-balancing loss's choices [T, K])), margins of the MoE layers only
        self.stats = {"aux_layers": aux_layers, "z_layers": z_layers, "dropped_layers": dropped_layers,
                      "topk_margin_layers": margins, "routes": routes}
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
