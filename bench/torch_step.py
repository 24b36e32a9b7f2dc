#!/usr/bin/env python3
"""The PyTorch side of `bench/compare-pytorch`: times the book's training step (forward,
cross-entropy, backward, Adam) on random data, exactly as `deepcnn bench --json` does, and
prints one JSON object. The networks are the book's code, from book_pytorch.py: fp32, eager
mode, PyTorch's default thread count.

    python3 bench/torch_step.py --model resnet18 --batch-size 64 [--input 28] [--steps 20]
"""
import argparse, json, os, statistics, sys, time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from book_pytorch import MODELS  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--input", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    size = a.input or (96 if a.model == "densenet" else 28)

    torch.manual_seed(0)
    net = MODELS[a.model]()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(a.batch_size, 1, size, size, generator=gen)
    labels = torch.randint(0, 10, (a.batch_size,), generator=gen)

    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        opt.zero_grad()
        logits = net(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        opt.step()
        # The same host read-backs as deepcnn's step: the loss and the correct count.
        loss.item()
        (logits.argmax(dim=1) == labels).sum().item()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({
        "model": a.model, "batch_size": a.batch_size, "size": size, "step_seconds": times,
        "median_seconds": median, "images_per_sec": a.batch_size / median,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
