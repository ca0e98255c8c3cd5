"""PyTorch eager reference for `optimum-net bench train --device cuda` (issue #18), for the GPU host.

The same model as the bench's GPT-2 (no dropout, tied embeddings, GELU tanh, LayerNorm eps 1e-5, 12 x 768, 12 heads,
vocab 50257; causal attention through F.scaled_dot_product_attention, transformers' default), AdamW (lr 3e-4, weight decay
0.01 on every parameter, as the bench's), one batch of random tokens repeated. Precisions: fp32 (TF32 off), tf32 (TF32 on
for matmul and cuDNN), bf16 (autocast, TF32 on), fp16 (autocast + GradScaler). Prints one JSON object per precision:
tokens/s, step ms and peak CUDA memory (torch.cuda.max_memory_allocated). Not run on the development machine (it has no
GPU and no PyTorch); run it on the device next to the bench.

    python torch_gpt2_train.py --batch 16 --seq 1024 --steps 20 --warmup 5 --precision fp32,tf32,bf16,fp16
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, layers, width, heads, vocab, positions):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(positions, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, eps=1e-5)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids, labels):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()            # tied head
        # transformers' causal-LM loss: predict token i+1 from position i, in float32
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def measure(args, precision):
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = Gpt2(args.layers, args.width, args.heads, args.vocab, args.seq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    torch.cuda.reset_peak_memory_stats()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = model(ids, ids)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in model.parameters())
    tokens = args.batch * args.seq
    flops = 6.0 * params * tokens + 12.0 * args.layers * args.seq * args.width * tokens
    return {
        "bench": "train", "engine": "pytorch-eager", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
        "precision": precision, "layers": args.layers, "width": args.width, "heads": args.heads, "seq": args.seq, "vocab": args.vocab,
        "batch": args.batch, "parameters": params, "step_ms": dt * 1000, "tokens_per_s": tokens / dt, "gflops_per_s": flops / dt / 1e9,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 1e6, "last_loss": float(loss), "finite": math.isfinite(float(loss)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", default="fp32,tf32,bf16,fp16")
    args = p.parse_args()
    for precision in args.precision.split(","):
        if precision not in ("fp32", "tf32", "bf16", "fp16"):
            raise SystemExit(f"--precision {precision!r} is not one of fp32, tf32, bf16, fp16")
        print(json.dumps(measure(args, precision)), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
