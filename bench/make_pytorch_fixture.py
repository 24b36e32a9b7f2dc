#!/usr/bin/env python3
"""Makes tests/fixtures/lenet_bn_scratch_step.safetensors: the book's LeNet with from-scratch
batch normalization (bench/book_pytorch.py) before and after one Adam step on one batch, so that
`cargo test` can check deepcnn's forward pass, backward pass, moving averages and Adam update
against PyTorch's, step for step.

    pip install torch safetensors && python3 bench/make_pytorch_fixture.py

Keys: `init.<name>` and `step1.<name>` for each PyTorch state_dict entry (Linear weights are
out×in, BN tensors 1×C or 1×C×1×1), `batch.images` (32×1×28×28 in [0, 1]), `batch.labels`
(int64), `step1.loss` (the batch's loss before the update).
"""
import os, sys
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import book_pytorch as book

torch.manual_seed(0)
net = book.MODELS["lenet-bn-scratch"]()
tensors = {f"init.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}
# Structured images (not pure noise), so that every layer sees a spread of values.
images = (torch.rand(32, 1, 28, 28) * torch.linspace(0.2, 1.0, 28).view(1, 1, 28, 1)).contiguous()
labels = torch.arange(32) % 10
opt = torch.optim.Adam(net.parameters(), lr=0.001)
loss = torch.nn.CrossEntropyLoss()(net(images), labels)
opt.zero_grad()
loss.backward()
opt.step()
tensors.update({f"step1.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()})
tensors.update({"batch.images": images, "batch.labels": labels, "step1.loss": loss.detach().reshape(1)})
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "lenet_bn_scratch_step.safetensors")
os.makedirs(os.path.dirname(out), exist_ok=True)
save_file(tensors, out)
print(f"wrote {out}: loss {loss.item():.6f}")
