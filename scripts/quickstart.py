"""Quick start: a 1D CNN on MNIST-1D, dense and with GraNet at 90 % sparsity.

Run with ``make demo`` (or ``python scripts/quickstart.py``). The data are
generated locally by the ``mnist1d`` package (no download). The only sparsity
line is the ``sparsetrain.attach`` call; the loop is a plain PyTorch loop.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from mnist1d.data import get_dataset_args, make_dataset

import sparsetrain
from sparsetrain.train.models import create_model


def load_mnist1d(seed: int = 0):
    """MNIST-1D's default 4000 / 1000 split as float tensors (N, 1, 40)."""
    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    tensor = lambda a: torch.as_tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    return (tensor(d["x"]), torch.as_tensor(d["y"]).long(), tensor(d["x_test"]), torch.as_tensor(d["y_test"]).long())


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(method: str | None, data, epochs: int, seed: int, batch_size: int = 128) -> tuple[float, str]:
    x, y, x_test, y_test = data
    torch.manual_seed(seed)
    model = create_model("cnn1d")
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)
    info = "dense"
    if method:
        # the one line: GraNet, s_i = 0.5 -> 90 % sparsity, pruning over the first 60 % of training
        sp = sparsetrain.attach(model, opt, method, density=0.1, initial_density=0.5, update_every=20,
                                end=0.6, total_steps=total, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if method:
        info = f"density {sp.density():.3f}, ITOP rate {sp.itop_rate():.3f}"
    return accuracy(model, x_test, y_test), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="granet", help="any of sparsetrain.list_methods()")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_mnist1d(args.seed)
    print(f"MNIST-1D: {len(data[0])} train / {len(data[2])} test, 1D CNN, {args.epochs} epochs, seed {args.seed}")
    rows = []
    for method in (None, args.method):
        start = time.perf_counter()
        acc, info = train(method, data, args.epochs, args.seed)
        rows.append((method or "dense", acc, info, time.perf_counter() - start))
    print(f"\n{'method':<10} {'test acc':>9}  {'time':>7}  notes")
    for name, acc, info, secs in rows:
        print(f"{name:<10} {acc * 100:>8.2f}%  {secs:>6.1f}s  {info}")


if __name__ == "__main__":
    main()
