#!/usr/bin/env python3
"""The PyTorch side of `bench/compare-pytorch`: times the book's training step (forward,
cross-entropy, backward, Adam) on random data, exactly as `deepcnn bench --json` does, and
prints one JSON object. The networks are the book's code, from book_pytorch.py: eager mode,
PyTorch's default thread count; fp32, or bf16 autocast with channels-last tensors (PyTorch's best
mode on a CPU with bf16 instructions, and on CUDA).

On CUDA, `fp32` is PyTorch's default, under which cuDNN convolutions run in TF32 on the tensor
cores (`torch.backends.cudnn.allow_tf32` is True; matmuls stay fp32). `fp32-strict` turns TF32
off for both, so every multiply is fp32 as in deepcnn's Vulkan kernels (Vulkan's cooperative
matrices offer no TF32).

    python3 bench/torch_step.py --model resnet18 --batch-size 64 [--input 28] [--steps 20]
        [--device cuda] [--precision fp32|fp32-strict|bf16]
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
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp32-strict", "bf16"],
                   help="fp32-strict: no TF32 in convolutions or matmuls; bf16: autocast to "
                        "bfloat16 and channels-last tensors (CUDA only)")
    a = p.parse_args()
    size = a.input or (96 if a.model == "densenet" else 28)
    device = torch.device(a.device)
    bf16 = a.precision == "bf16"
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    if a.precision == "fp32-strict":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    torch.manual_seed(0)
    net = MODELS[a.model]().to(device, memory_format=memory_format)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(a.batch_size, 1, size, size, generator=gen)
    labels = torch.randint(0, 10, (a.batch_size,), generator=gen)

    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        # The batch comes from host memory every step, as in deepcnn's bench and training loop.
        x = images.to(device, non_blocking=False).contiguous(memory_format=memory_format)
        y = labels.to(device)
        opt.zero_grad()
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
            loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        # The same host read-backs as deepcnn's step: the loss and the correct count.
        loss.item()
        (logits.argmax(dim=1) == y).sum().item()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({
        "model": a.model, "batch_size": a.batch_size, "size": size, "step_seconds": times,
        "median_seconds": median, "images_per_sec": a.batch_size / median,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "precision": a.precision,
        "tf32": {"conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
    }))


if __name__ == "__main__":
    main()
