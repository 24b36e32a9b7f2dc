#!/usr/bin/env python3
"""The book's PyTorch code for §5.10-5.12 (LeNet with batch normalization, ResNet-18, DenseNet),
trained on the same Fashion-MNIST IDX files as deepcnn, printing the same per-epoch line.

A reference for deepcnn's results on this machine:
    python3 bench/book_pytorch.py --model lenet-bn [--epochs 5] [--limit N] [--resize S]
Needs only `torch` (pip install torch); reads the IDX files itself (no torchvision).
"""
import argparse, gzip, os, struct, time

import torch
from torch import nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    rank = magic & 0xFF
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return torch.frombuffer(bytearray(data[4 + 4 * rank:]), dtype=torch.uint8).reshape(dims)


def load(data_dir, prefix):
    def find(name):
        for n in (name, name + ".gz"):
            if os.path.exists(os.path.join(data_dir, n)):
                return os.path.join(data_dir, n)
        raise FileNotFoundError(name)
    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).float().div(255).unsqueeze(1)
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).long()
    return x, y


# --- The book's from-scratch batch normalization (moving variance initialised to 1). ---
def batch_norm(is_training, X, gamma, beta, moving_mean, moving_var, eps, momentum):
    if not is_training:
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma * X_hat + beta
    return Y, moving_mean, moving_var


class BatchNorm(nn.Module):
    def __init__(self, num_features, num_dims):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X):
        Y, mm, mv = batch_norm(self.training, X, self.gamma, self.beta, self.moving_mean,
                               self.moving_var, eps=1e-5, momentum=0.9)
        self.moving_mean, self.moving_var = mm.detach(), mv.detach()
        return Y


def lenet(bn):
    def norm(c, dims):
        if bn == "scratch":
            return [BatchNorm(c, num_dims=dims)]
        if bn == "builtin":
            return [nn.BatchNorm2d(c) if dims == 4 else nn.BatchNorm1d(c)]
        return []
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), *norm(6, 4), nn.Sigmoid(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), *norm(16, 4), nn.Sigmoid(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), *norm(120, 2), nn.Sigmoid(),
        nn.Linear(120, 84), *norm(84, 2), nn.Sigmoid(),
        nn.Linear(84, 10))


class Residual(nn.Module):
    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        return F.relu(Y + X)


def resnet_block(in_channels, out_channels, num_residuals, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(in_channels, out_channels, use_1x1conv=True, stride=2))
        else:
            blk.append(Residual(out_channels, out_channels))
    return nn.Sequential(*blk)


def stem():
    return [nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]


def resnet18():
    net = nn.Sequential(*stem())
    net.add_module("resnet_block1", resnet_block(64, 64, 2, first_block=True))
    net.add_module("resnet_block2", resnet_block(64, 128, 2))
    net.add_module("resnet_block3", resnet_block(128, 256, 2))
    net.add_module("resnet_block4", resnet_block(256, 512, 2))
    net.add_module("global_avg_pool", nn.AdaptiveAvgPool2d((1, 1)))
    net.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(512, 10)))
    return net


def conv_block(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    def __init__(self, num_convs, in_channels, out_channels):
        super().__init__()
        self.net = nn.ModuleList([conv_block(in_channels + i * out_channels, out_channels)
                                  for i in range(num_convs)])
        self.out_channels = in_channels + num_convs * out_channels

    def forward(self, X):
        for blk in self.net:
            X = torch.cat((X, blk(X)), dim=1)
        return X


def transition_block(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel_size=1),
                         nn.AvgPool2d(kernel_size=2, stride=2))


def densenet():
    net = nn.Sequential(*stem())
    num_channels, growth_rate = 64, 32
    num_convs_in_dense_blocks = [4, 4, 4, 4]
    for i, num_convs in enumerate(num_convs_in_dense_blocks):
        DB = DenseBlock(num_convs, num_channels, growth_rate)
        net.add_module("DenseBlosk_%d" % i, DB)
        num_channels = DB.out_channels
        if i != len(num_convs_in_dense_blocks) - 1:
            net.add_module("transition_block_%d" % i, transition_block(num_channels, num_channels // 2))
            num_channels = num_channels // 2
    net.add_module("BN", nn.BatchNorm2d(num_channels))
    net.add_module("relu", nn.ReLU())
    net.add_module("global_avg_pool", nn.AdaptiveAvgPool2d((1, 1)))
    net.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(num_channels, 10)))
    return net


MODELS = {
    "lenet": lambda: lenet(None),
    "lenet-bn-scratch": lambda: lenet("scratch"),
    "lenet-bn": lambda: lenet("builtin"),
    "resnet18": resnet18,
    "densenet": densenet,
}


def batches(x, y, batch_size, resize, order=None):
    n = len(y)
    order = torch.arange(n) if order is None else order
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        xb = x[idx]
        if resize:
            xb = F.interpolate(xb, size=(resize, resize), mode="bilinear", align_corners=False)
        yield xb, y[idx]


def evaluate(net, x, y, batch_size, resize):
    net.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in batches(x, y, batch_size, resize):
            correct += (net(xb).argmax(dim=1) == yb).sum().item()
    net.train()
    return correct / len(y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--resize", type=int)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    xtr, ytr = load(a.data_dir, "train")
    xte, yte = load(a.data_dir, "t10k")
    if a.limit:
        xtr, ytr = xtr[:a.limit], ytr[:a.limit]
    net = MODELS[a.model]()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads: training {a.model} on {len(ytr)} images")
    for epoch in range(1, a.epochs + 1):
        start = time.time()
        loss_sum, correct = 0.0, 0
        for xb, yb in batches(xtr, ytr, a.batch_size, a.resize, torch.randperm(len(ytr))):
            out = net(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(dim=1) == yb).sum().item()
        train_time = time.time() - start
        test_acc = evaluate(net, xte, yte, a.batch_size, a.resize)
        print(f"epoch {epoch}, loss {loss_sum / len(ytr):.4f}, train acc {correct / len(ytr):.3f}, "
              f"test acc {test_acc:.3f}, {time.time() - start:.1f} s, {len(ytr) / train_time:.0f} examples/sec",
              flush=True)


if __name__ == "__main__":
    main()
