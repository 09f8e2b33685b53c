#!/usr/bin/env python3
"""The forecaster of `src/model/transformer.rs` in PyTorch, timed the way `energy bench` times ours.

Same shape and work per step: a per-position input projection plus a learned positional
embedding, pre-norm encoder blocks (layer norm, fused QKV projection, non-causal attention,
output projection, layer norm, MLP with GELU), a final layer norm, a monotone quantile head on
the last `horizon` positions (softplus gaps around the median), the pinball loss, gradient
clipping by global norm and AdamW. PyTorch's attention is its fused
`scaled_dot_product_attention` (exact softmax attention).

    python3 benches/peers/model_torch.py --context 168 --threads 2 --json

Prints one JSON object: parameters, training and inference sequences/s.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, d_model, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.attention_norm = torch.nn.LayerNorm(d_model)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.output = torch.nn.Linear(d_model, d_model)
        self.mlp_norm = torch.nn.LayerNorm(d_model)
        self.mlp_in = torch.nn.Linear(d_model, d_model * mlp_ratio)
        self.mlp_out = torch.nn.Linear(d_model * mlp_ratio, d_model)

    def forward(self, x):
        batch, positions, d_model = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, positions, 3, self.heads, d_model // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.output(attended.transpose(1, 2).reshape(batch, positions, d_model))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x))))


class Forecaster(torch.nn.Module):
    def __init__(self, features, positions, horizon, d_model, heads, layers, mlp_ratio, quantiles):
        super().__init__()
        self.horizon = horizon
        self.input = torch.nn.Linear(features, d_model)
        self.position = torch.nn.Parameter(torch.randn(positions, d_model) * 0.02)
        self.blocks = torch.nn.ModuleList([Block(d_model, heads, mlp_ratio) for _ in range(layers)])
        self.final_norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, len(quantiles))
        self.anchor = min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5))

    def forward(self, x):
        hidden = self.input(x) + self.position
        for block in self.blocks:
            hidden = block(hidden)
        raw = self.head(self.final_norm(hidden)[:, -self.horizon:])
        a = self.anchor
        center = raw[..., a:a + 1]
        parts = []
        if a > 0:
            parts.append(center - F.softplus(raw[..., :a]).flip(-1).cumsum(-1).flip(-1))
        parts.append(center)
        if a + 1 < raw.shape[-1]:
            parts.append(center + F.softplus(raw[..., a + 1:]).cumsum(-1))
        return torch.cat(parts, -1)


def pinball(pred, target, levels):
    error = target.unsqueeze(-1) - pred
    return torch.maximum(error * levels, error * (levels - 1)).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=168)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--features", type=int, default=22)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--mlp-ratio", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-sequences", type=int, default=1024)
    parser.add_argument("--predict-sequences", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    quantiles = [0.1, 0.5, 0.9]
    positions = args.context + args.horizon
    model = Forecaster(args.features, positions, args.horizon, args.d_model, args.heads, args.layers,
                       args.mlp_ratio, quantiles)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    levels = torch.tensor(quantiles)
    inputs = torch.rand(args.train_sequences, positions, args.features) - 0.5
    targets = torch.rand(args.train_sequences, args.horizon) - 0.5

    def epoch(count):
        order = torch.randperm(count)
        for start in range(0, count, args.batch):
            rows = order[start:start + args.batch]
            optimizer.zero_grad(set_to_none=True)
            loss = pinball(model(inputs[rows]), targets[rows], levels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()

    epoch(args.batch)  # untimed warm-up
    started = time.perf_counter()
    epoch(args.train_sequences)
    train_seconds = time.perf_counter() - started

    predict_inputs = torch.rand(args.predict_sequences, positions, args.features) - 0.5

    def predict(count):
        with torch.inference_mode():
            for start in range(0, count, args.batch):
                model(predict_inputs[start:start + args.batch]).sum().item()

    predict(args.batch)
    started = time.perf_counter()
    predict(args.predict_sequences)
    predict_seconds = time.perf_counter() - started

    result = {
        "peer": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "positions": positions,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_sequences_per_s": args.train_sequences / train_seconds,
        "predict_sequences_per_s": args.predict_sequences / predict_seconds,
    }
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
