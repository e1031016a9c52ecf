"""The same training step as bench/train_step.cpp in PyTorch 2.15 from the project's virtual environment
(the LibTorch ladder links): LLaMA-style dense model (RMSNorm, RoPE, causal attention through
F.scaled_dot_product_attention, SwiGLU), cross-entropy, global norm clipping, torch.optim.AdamW.
--precision bf16 runs the forward under torch.autocast (bf16, fp32 master weights, as ladder does);
--compile wraps the model in torch.compile.

    ~/.cache/ladder/torch-2.15.0/bin/python3 bench/train_step.py --d-model 512 --layers 8 --heads 8 \
        --seq 256 --batch 8 --threads 2 [--precision bf16] [--compile] [--device cuda]
"""
import argparse
import resource
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
for name, default in [("d-model", 512), ("layers", 8), ("heads", 8), ("seq", 256), ("batch", 8),
                      ("vocab", 257), ("steps", 10), ("threads", 2)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
p.add_argument("--compile", action="store_true")
a = p.parse_args()
dev = torch.device(a.device)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
d, L, H, T, V = a.d_model, a.layers, a.heads, a.seq, a.vocab
hd = d // H
ffn = (8 * d // 3 + 63) // 64 * 64


def rms_norm(x, g, eps=1e-5):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * g


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm = torch.nn.Parameter(torch.ones(d))
        self.mlp_norm = torch.nn.Parameter(torch.ones(d))
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        self.w_gate = torch.nn.Linear(d, ffn, bias=False)
        self.w_up = torch.nn.Linear(d, ffn, bias=False)
        self.w_down = torch.nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = rms_norm(x, self.attn_norm)
        q = self.wq(h).view(b, t, H, hd)
        k = self.wk(h).view(b, t, H, hd)
        v = self.wv(h).view(b, t, H, hd)

        def rope(z):
            z1, z2 = z[..., : hd // 2], z[..., hd // 2:]
            c, s_ = cos.type_as(z), sin.type_as(z)  # in the dtype of q and k, as ladder does
            return torch.cat([z1 * c - z2 * s_, z2 * c + z1 * s_], -1)

        q, k, v = rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2)
        a_ = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.wo(a_)
        h = rms_norm(x, self.mlp_norm)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(L))
        self.final_norm = torch.nn.Parameter(torch.ones(d))
        self.readout = torch.nn.Linear(d, V, bias=False)
        inv = 10000.0 ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
        ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
        self.register_buffer("cos", ang.cos().float()[:, None, :])
        self.register_buffer("sin", ang.sin().float()[:, None, :])

    def forward(self, tokens, targets):
        x = self.embedding(tokens)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        logits = self.readout(rms_norm(x, self.final_norm))
        return F.cross_entropy(logits.float().view(-1, V), targets.reshape(-1))


model = Model().to(dev)
forward = torch.compile(model) if a.compile else model
decay = [p for n, p in model.named_parameters() if p.dim() > 1]
no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                         {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))
tokens = torch.randint(0, V, (a.batch, T + 1), device=dev)
inputs, targets = tokens[:, :T], tokens[:, 1:]


def step():
    opt.zero_grad(set_to_none=False)
    with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        loss = forward(inputs, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


for _ in range(3 if a.compile else 2):  # torch.compile compiles in the first steps
    step()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
s = time.perf_counter() - t0
tps = a.steps * a.batch * T / s
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
mode = a.precision + (" torch.compile" if a.compile else " eager")
print(f"python  torch {torch.__version__} {mode} on {a.device}, step {s / a.steps:.3f} s, "
      f"{tps:.0f} tokens/s, peak RSS {rss:.0f} MB")
print(f"RESULT python_tokens_per_s {tps:.1f}")
