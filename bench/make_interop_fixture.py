#!/usr/bin/env python3
"""Makes the fixtures of tests/pytorch_interop.rs: the book's LeNet variants (bench/book_pytorch.py)
after a few Adam steps (so that the BN moving statistics are not their initial values), saved
the way PyTorch users save them, and their evaluation-mode logits on a batch of images.

    pip install torch safetensors && python3 bench/make_interop_fixture.py

Writes tests/fixtures/interop/:
  lenet-bn-scratch.pt, lenet-bn.pt   torch.save(net.state_dict(), ...)
  lenet.safetensors                  safetensors.torch.save_file(net.state_dict(), ...)
  expected.safetensors               `images` (8×1×28×28) and `logits.<model>` (8×10, eval mode)
"""
import os, sys
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import book_pytorch as book

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "interop")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
images = (torch.rand(8, 1, 28, 28) * torch.linspace(0.2, 1.0, 28).view(1, 1, 28, 1)).contiguous()
expected = {"images": images}
for name in ["lenet-bn-scratch", "lenet-bn", "lenet"]:
    net = book.MODELS[name]()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for step in range(3):
        x = torch.rand(32, 1, 28, 28)
        loss = torch.nn.CrossEntropyLoss()(net(x), torch.arange(32) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        expected[f"logits.{name}"] = net(images).contiguous()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if name == "lenet":
        save_file(state, os.path.join(out, f"{name}.safetensors"))
    else:
        torch.save(state, os.path.join(out, f"{name}.pt"))
save_file(expected, os.path.join(out, "expected.safetensors"))
print(f"wrote {out}")
