"""FSDP2 against DDP (issue 13): the step time of the same sparse run, 2 CPU ranks (gloo).

    python benchmarks/fsdp.py            # full run, a few minutes on 2 CPU cores
    python benchmarks/fsdp.py --quick    # smoke run, well under a minute

The script launches itself on 2 ranks with ``torch.distributed.run``. Each
rank builds the same MLP (``--widths``, input 784, 10 classes) four ways:
DDP dense, DDP + method, FSDP2 dense, FSDP2 + method (``fully_shard`` on
every linear layer and on the model), with the method's topology updates
every ``--update-every`` steps. A round times a window of ``--steps`` full
training steps (zero_grad, forward, backward, ``optimizer.step()``, so the
updates inside the window are amortised) of each set-up, in a shuffled
order; the figures are medians over rounds of the slowest rank's window.
Printed: ms per step of each, FSDP2 / DDP for the sparse and the dense run,
and sparse / dense under each (what the engine costs there). Only rank 0
prints and writes ``benchmarks/RESULTS.md`` (section ``fsdp-latest``).

Read the figures as what they are: FSDP2 on CPU with gloo spends its time in
all-gathers and reduce-scatters that NCCL on GPUs overlaps with compute, so
the FSDP2 / DDP ratio here is not a GPU figure; the engine's share (sparse /
dense under FSDP2) is the part sparsetrain answers for.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Tee, demote, fill_defaults, machine_info, table, write_section  # noqa: E402

SETUPS = ("ddp dense", "ddp sparse", "fsdp2 dense", "fsdp2 sparse")
FULL = {"widths": "1024,1024", "batch": 256, "steps": 100, "rounds": 5, "update_every": 50}
QUICK = {"widths": "64,64", "batch": 32, "steps": 10, "rounds": 1, "update_every": 5}


def build(setup: str, widths: list[int], method: str, density: float, update_every: int, total_steps: int):
    """``(model to call, optimizer)`` of one set-up; the same weights on every rank."""
    from torch.distributed.fsdp import fully_shard

    import sparsetrain

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    fan_in = 784
    for w in widths:
        layers += [nn.Linear(fan_in, w), nn.ReLU()]
        fan_in = w
    model = nn.Sequential(*layers, nn.Linear(fan_in, 10))
    if setup.startswith("ddp"):
        net = nn.parallel.DistributedDataParallel(model)
    else:
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        net = fully_shard(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    if setup.endswith("sparse"):
        sparsetrain.attach(net, opt, method, density=density, update_every=update_every, total_steps=total_steps)
    return net, opt


def window(net, opt, batches) -> float:
    """Seconds for one training step per batch (the slowest rank's)."""
    import torch.distributed as dist

    dist.barrier()
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed)


def worker(args) -> None:
    """One rank: every set-up, ``rounds`` shuffled windows each; rank 0 prints."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    widths = [int(w) for w in args.widths.split(",")]
    total = args.steps * (args.rounds + 1)
    nets = {s: build(s, widths, args.method, args.density, args.update_every, total) for s in SETUPS}
    g = torch.Generator().manual_seed(1000 + rank)
    batches = [(torch.randn(args.batch // 2, 784, generator=g), torch.randint(0, 10, (args.batch // 2,), generator=g))
               for _ in range(args.steps)]
    for s in SETUPS:  # warm-up: FSDP2's lazy init, first allocations, one round of updates
        window(*nets[s], batches)
    times: dict[str, list[float]] = {s: [] for s in SETUPS}
    order = list(SETUPS)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for s in order:
            times[s].append(window(*nets[s], batches) / args.steps)
    if rank == 0:
        report(args, times)
    dist.barrier()
    dist.destroy_process_group()


def report(args, times: dict[str, list[float]]) -> None:
    med = {s: statistics.median(v) for s, v in times.items()}
    print("# FSDP2 vs DDP, 2 CPU ranks (gloo)" + (" (--quick)" if args.quick else ""))
    print()
    for line in machine_info("cpu"):
        print(f"- {line}")
    print(f"- MLP 784-{args.widths.replace(',', '-')}-10, global batch {args.batch} (2 x {args.batch // 2}), "
          f"SGD momentum 0.9; {args.method} at density {args.density}, update every {args.update_every} steps; "
          f"{args.rounds} rounds of {args.steps} steps per set-up, 1 thread per rank")
    print()
    rows = [[s, f"{1e3 * med[s]:.2f}", ", ".join(f"{1e3 * t:.2f}" for t in times[s])] for s in SETUPS]
    print(table(["set-up", "ms/step (median)", "per round"], rows))
    print()
    ratios = [["FSDP2 / DDP, sparse", f"{med['fsdp2 sparse'] / med['ddp sparse']:.3f}"],
              ["FSDP2 / DDP, dense", f"{med['fsdp2 dense'] / med['ddp dense']:.3f}"],
              ["sparse / dense under DDP", f"{med['ddp sparse'] / med['ddp dense']:.3f}"],
              ["sparse / dense under FSDP2", f"{med['fsdp2 sparse'] / med['fsdp2 dense']:.3f}"]]
    print(table(["ratio", "value"], ratios))


def launch(argv: list[str]) -> int:
    """Run this script on 2 ranks; rank 0's report goes to stdout (and RESULTS.md unless --quick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPARSETRAIN_FSDP_BENCH_WORKER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", __file__, *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-6000:], file=sys.stderr)
        return proc.returncode
    print(proc.stdout, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke run)")
    parser.add_argument("--method", default="rigl")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--widths", default=None, help=f"hidden widths (default {FULL['widths']})")
    parser.add_argument("--batch", type=int, default=None, help=f"global batch (default {FULL['batch']})")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per window (default {FULL['steps']})")
    parser.add_argument("--rounds", type=int, default=None, help=f"windows per set-up (default {FULL['rounds']})")
    parser.add_argument("--update-every", type=int, default=None,
                        help=f"steps between topology updates (default {FULL['update_every']})")
    parser.add_argument("--results", default=None, help="Markdown file for the report (default: "
                        "benchmarks/RESULTS.md, section 'fsdp-latest'; --quick: none)")
    args = parser.parse_args(argv)
    fill_defaults(args, QUICK if args.quick else FULL)
    if os.environ.get("SPARSETRAIN_FSDP_BENCH_WORKER") == "1":
        worker(args)
        return 0
    results = args.results or (None if args.quick else str(Path(__file__).resolve().parent / "RESULTS.md"))
    with Tee() as tee:
        code = launch(argv)
    if code == 0 and results:
        command = "python benchmarks/fsdp.py" + "".join(f" {a}" for a in argv)
        write_section("fsdp-latest", "## FSDP2 vs DDP step time, latest run (issue 13)\n\n"
                      f"```\n{command}\n```\n\n" + demote(tee.text(), 2), results)
    return code


if __name__ == "__main__":
    status = main()
    if os.environ.get("SPARSETRAIN_FSDP_BENCH_WORKER") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # as tests/ddp_worker.py: skip an interpreter teardown that sometimes aborts under gloo
    sys.exit(status)
