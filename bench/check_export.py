#!/usr/bin/env python3
"""Loads a `deepcnn export` file into the book's PyTorch network (strict load_state_dict) and
prints its test accuracy in evaluation mode, to compare with `deepcnn eval`:

    deepcnn export --checkpoint runs/lenet-bn --out lenet-bn.safetensors
    python3 bench/check_export.py --model lenet-bn lenet-bn.safetensors [--resize S]
"""
import argparse, os, sys
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
import book_pytorch as book

p = argparse.ArgumentParser()
p.add_argument("--model", required=True, choices=sorted(book.MODELS))
p.add_argument("file")
p.add_argument("--resize", type=int)
p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
a = p.parse_args()
net = book.MODELS[a.model]()
net.load_state_dict(load_file(a.file), strict=True)
net.eval()
x, y = book.load(a.data_dir, "t10k")
correct = 0
with torch.no_grad():
    for i in range(0, len(y), 500):
        xb = x[i:i + 500]
        if a.resize:
            xb = F.interpolate(xb, size=(a.resize, a.resize), mode="bilinear", align_corners=False)
        correct += (net(xb).argmax(1) == y[i:i + 500]).sum().item()
print(f"PyTorch, {a.model} from {a.file}: test acc {correct / len(y):.4f} ({correct} of {len(y)})")
