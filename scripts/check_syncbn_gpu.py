"""Check on GPUs that SyncBatchNorm under DDP computes exactly what BatchNorm computes on the global batch.

    python scripts/check_syncbn_gpu.py                   # one rank per visible GPU (at least 2), NCCL
    python scripts/check_syncbn_gpu.py --world-size 2    # on 1 GPU: 2 ranks share it (gloo)

Each rank holds B images of a global batch of world_size x B; the network (conv-BN-ReLU-conv-BN,
converted with SyncBatchNorm.convert_sync_batchnorm, as strategy=ddp_syncbn does) runs under
DistributedDataParallel. Compared with one process running plain BatchNorm on the whole batch:
the outputs, the gradients w.r.t. the inputs, the DDP-averaged parameter gradients and the running
statistics. Prints the largest differences and exits 0 when all are within --tol, 1 otherwise.
torch.nn.SyncBatchNorm does not run on CPU, hence the GPU requirement (strategy=ddp_syncbn refuses
CPU runs for that reason).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial affine parameters
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
    return net


def _data(world_size: int, batch: int):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(world_size * batch, 3, 8, 8, generator=g) * 2 + 0.5
    weights = torch.randn(world_size * batch, 4, 8, 8, generator=g)  # loss = sum(out * weights)
    return images, weights


def _rank(rank: int, world_size: int, batch: int, backend: str, init_file: str, device_ids: list[int], out: str):
    device = torch.device("cuda", device_ids[rank])
    torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        images, weights = _data(world_size, batch)
        rows = slice(rank * batch, (rank + 1) * batch)
        x = images[rows].to(device).requires_grad_(True)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(_net()).to(device)
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index])
        y = model(x)
        (y * weights[rows].to(device)).sum().backward()
        stats = {k: v.cpu() for k, v in net.state_dict().items() if "running" in k}
        torch.save({"y": y.detach().cpu(), "x_grad": x.grad.cpu(), "stats": stats,
                    "param_grads": [p.grad.cpu() for p in net.parameters()]}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=None, help="ranks (default: the number of GPUs)")
    parser.add_argument("--batch", type=int, default=4, help="images per rank")
    parser.add_argument("--backend", default=None, help="nccl (one GPU per rank) or gloo (default: nccl "
                                                        "when every rank has its own GPU, else gloo)")
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    if gpus == 0:
        print("error: no CUDA GPU visible; torch.nn.SyncBatchNorm only runs on GPUs", file=sys.stderr)
        return 2
    world_size = args.world_size or gpus
    if world_size < 2:
        print("error: the check needs 2 ranks: pass --world-size 2 to let them share the one GPU", file=sys.stderr)
        return 2
    device_ids = [r % gpus for r in range(world_size)]
    backend = args.backend or ("nccl" if world_size <= gpus else "gloo")  # NCCL refuses 2 ranks on one GPU
    torch.backends.cudnn.allow_tf32 = False  # compare in true fp32
    torch.backends.cuda.matmul.allow_tf32 = False

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank, args=(world_size, args.batch, backend, os.path.join(tmp, "init"), device_ids, tmp),
                 nprocs=world_size, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world_size)]

    # Reference: one process, plain BatchNorm, the whole global batch, same weights.
    images, weights = _data(world_size, args.batch)
    x = images.cuda().requires_grad_(True)
    net = _net().cuda()
    y = net(x)
    (y * weights.cuda()).sum().backward()
    reference_stats = {k: v.cpu() for k, v in net.state_dict().items() if "running" in k}

    diffs = {
        "outputs": (torch.cat([r["y"] for r in ranks]) - y.detach().cpu()).abs().max().item(),
        "input gradients": (torch.cat([r["x_grad"] for r in ranks]) - x.grad.cpu()).abs().max().item(),
        # DDP averages parameter gradients over ranks; each rank's loss is its share of the sum.
        "parameter gradients": max((got - want.cpu() / world_size).abs().max().item()
                                   for r in ranks for got, want in zip(r["param_grads"], (p.grad for p in net.parameters()))),
        "running statistics": max((r["stats"][k] - v).abs().max().item() for r in ranks for k, v in reference_stats.items()),
    }
    print(f"SyncBatchNorm on {world_size} ranks ({backend}, GPUs {device_ids}, {args.batch} images each) "
          f"vs BatchNorm on the global batch of {world_size * args.batch}, {torch.cuda.get_device_name(0)}:")
    ok = True
    for name, diff in diffs.items():
        passed = diff <= args.tol
        ok &= passed
        print(f"  {name:<20} max |diff| = {diff:.2e}  {'ok' if passed else 'FAIL'} (tol {args.tol:g})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
