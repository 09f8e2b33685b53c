#!/usr/bin/env python3
"""Training and inference sequences/s of our forecaster against the same model in PyTorch.

Runs `energy bench --model-only` and `model_torch.py` on the same shape (batch 32, d_model 64,
4 heads, 2 layers, MLP 256, 22 features, horizon 24) at each context, alternating the two sides
`--repeat` times so that both see the same machine, and prints the median sequences/s of each
side and their ratio (ours / PyTorch). PyTorch runs with as many threads as the machine has
cores (`--threads`), as MLX does.

    pip install torch
    cargo build --release
    python3 benches/peers/model_compare.py --energy target/release/energy --context 168 360

`--context 168` is the main job's model (192 positions); 360 gives 384 positions.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(command):
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"no JSON from {' '.join(command)}:\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", default=os.path.join("target", "release", "energy"))
    parser.add_argument("--context", type=int, nargs="+", default=[168, 360])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="fewer sequences per run (256 train / 1024 predict)")
    parser.add_argument("--block-size", type=int, help="our attention block (the default model's when not given)")
    args = parser.parse_args()

    sizes = ["--train-sequences", "256", "--predict-sequences", "1024"] if args.quick else \
        ["--train-sequences", "2048", "--predict-sequences", "8192"]
    print(f"{'positions':>9} {'side':>8} {'train seq/s':>12} {'infer seq/s':>12}")
    rows = []
    for context in args.context:
        ours, theirs = [], []
        for _ in range(args.repeat):
            command = [args.energy, "--json", "-q", "bench", "--model-only", "--context", str(context)]
            if args.quick:
                command.append("--quick")
            if args.block_size:
                command += ["--block-size", str(args.block_size)]
            ours.append(run_json(command))
            theirs.append(run_json([sys.executable, os.path.join(HERE, "model_torch.py"), "--json",
                                    "--context", str(context), "--threads", str(args.threads)] + sizes))
        median = lambda runs, key: statistics.median(run[key] for run in runs)
        row = {
            "positions": ours[0]["positions"],
            "build": ours[0]["build"],
            "ours_train": median(ours, "train_sequences_per_s"),
            "ours_predict": median(ours, "predict_sequences_per_s"),
            "torch_train": median(theirs, "train_sequences_per_s"),
            "torch_predict": median(theirs, "predict_sequences_per_s"),
            "torch": theirs[0]["peer"],
            "torch_parameters": theirs[0]["parameters"],
        }
        rows.append(row)
        print(f"{row['positions']:>9} {'energy':>8} {row['ours_train']:>12.1f} {row['ours_predict']:>12.1f}")
        print(f"{row['positions']:>9} {'pytorch':>8} {row['torch_train']:>12.1f} {row['torch_predict']:>12.1f}")
        print(f"{row['positions']:>9} {'ratio':>8} {row['ours_train'] / row['torch_train']:>12.2f} "
              f"{row['ours_predict'] / row['torch_predict']:>12.2f}")
    print(f"(medians of {args.repeat} alternating runs; energy {rows[0]['build']} build; {rows[0]['torch']}, "
          f"{args.threads} threads)")


if __name__ == "__main__":
    main()
