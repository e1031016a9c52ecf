"""How far a Mamba-2 block's fp32 gradients are from fp64's, by the gated norm's group.

One block of ladder's Mamba-2 mixer (models/mamba.cpp, re-written here in PyTorch) at initialisation, on
2 x 256 random tokens of d_model 64: the relative Frobenius error of every parameter's fp32 gradient
against the fp64 one, with the gated RMSNorm per head, over all of d_inner (ladder's, as the reference's
single group) and without it. docs/hybrid.md tabulates the output.

    ~/.cache/ladder/torch-2.15.0/bin/python3 docs/hybrid_conditioning.py
"""
import math

import torch
import torch.nn.functional as F


def segment_sums(a):
    n = a.size(-1)
    x = a.unsqueeze(-1).expand(*a.shape, n)
    x = x.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(-1), 0).cumsum(-2)
    return x.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(0), -math.inf)


def ssd_chunked(x, dt, A, B, C, chunk):  # models/mamba.cpp ssd_chunked (sequence a multiple of chunk)
    b, s, h, p = x.shape
    n, c = B.shape[2], s // chunk
    X = (x * dt.unsqueeze(-1)).view(b, c, chunk, h, p)
    a = (dt * A).view(b, c, chunk, h).permute(0, 3, 1, 2)
    Bc, Cc = B.view(b, c, chunk, n), C.view(b, c, chunk, n)
    a_cum = a.cumsum(-1)
    y_diag = torch.einsum("bcls,bhcls,bcshp->bclhp", torch.einsum("bcln,bcsn->bcls", Cc, Bc),
                          segment_sums(a).exp(), X)
    states = torch.einsum("bcln,bhcl,bclhp->bchpn", Bc, (a_cum[..., -1:] - a_cum).exp(), X)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], 1)
    decay = segment_sums(F.pad(a_cum[..., -1], (1, 0))).exp()
    starts = torch.einsum("bhzc,bchpn->bzhpn", decay, states)[:, :c]
    y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, starts, a_cum.exp())
    return (y_diag + y_off).reshape(b, s, h, p)


def init(d, state, head_dim, kernel=4):
    inner, heads = 2 * d, 2 * d // head_dim
    normal = lambda *shape, fan_in: torch.randn(*shape, dtype=torch.float64) / math.sqrt(fan_in)
    spread = torch.linspace(0, 1, heads, dtype=torch.float64)
    dt0 = (math.log(1e-3) + spread * (math.log(1e-1) - math.log(1e-3))).exp()
    return dict(w_z=normal(inner, d, fan_in=d), w_x=normal(inner, d, fan_in=d),
                w_B=normal(state, d, fan_in=d), w_C=normal(state, d, fan_in=d),
                w_dt=normal(heads, d, fan_in=d), conv_x=normal(inner, kernel, fan_in=kernel),
                conv_B=normal(state, kernel, fan_in=kernel), conv_C=normal(state, kernel, fan_in=kernel),
                dt_bias=dt0 + torch.log(-torch.expm1(-dt0)), A_log=torch.log(1 + 15 * spread),
                D=torch.ones(heads, dtype=torch.float64), w_out=normal(d, inner, fan_in=inner))


def gradients(dtype, params, tokens, weights, head_dim, chunk, norm):
    P = {k: v.to(dtype).clone().requires_grad_(True) for k, v in params.items()}
    b, s, d = tokens.shape
    n, inner = P["w_B"].shape[0], P["w_x"].shape[0]
    heads = inner // head_dim
    h = tokens.to(dtype).reshape(b * s, d)
    z, dt_raw = h @ P["w_z"].t(), h @ P["w_dt"].t()
    xbc = torch.cat([h @ P["w_x"].t(), h @ P["w_B"].t(), h @ P["w_C"].t()], 1)
    weight = torch.cat([P["conv_x"], P["conv_B"], P["conv_C"]]).unsqueeze(1)
    k = weight.shape[-1]
    conv = F.conv1d(xbc.view(b, s, -1).transpose(1, 2), weight, padding=k - 1, groups=xbc.shape[1])
    act = F.silu(conv[..., :s].transpose(1, 2))
    x = act[..., :inner].reshape(b, s, heads, head_dim)
    B, C = act[..., inner:inner + n], act[..., inner + n:]
    dt = F.softplus(dt_raw.view(b, s, heads) + P["dt_bias"])
    y = ssd_chunked(x, dt, -P["A_log"].exp(), B, C, chunk) + x * P["D"].view(heads, 1)
    g = y * F.silu(z.view(b, s, heads, head_dim))
    if norm == "per head":
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)
    elif norm == "over d_inner":
        g = g.reshape(b, s, inner)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)
    out = g.reshape(b * s, inner) @ P["w_out"].t()
    (out * weights.to(dtype)).sum().backward()
    return {k: v.grad.double() for k, v in P.items()}


def main():
    print("relative Frobenius error of fp32 gradients against fp64, one Mamba-2 block at init")
    for norm in ["per head", "over d_inner", "none"]:
        for state, head_dim, chunk in [(64, 64, 64), (8, 16, 8), (64, 16, 64)]:
            torch.manual_seed(0)
            params = init(64, state, head_dim)
            tokens = torch.randn(2, 256, 64, dtype=torch.float64)
            weights = torch.randn(2 * 256, 64, dtype=torch.float64)
            exact = gradients(torch.float64, params, tokens, weights, head_dim, chunk, norm)
            fp32 = gradients(torch.float32, params, tokens, weights, head_dim, chunk, norm)
            errors = {k: ((fp32[k] - exact[k]).norm() / exact[k].norm()).item() for k in exact}
            print(f"{norm:13s} state {state:2d} head_dim {head_dim:2d} chunk {chunk:2d}: " +
                  " ".join(f"{k} {v:.1e}" for k, v in errors.items()))


if __name__ == "__main__":
    main()
