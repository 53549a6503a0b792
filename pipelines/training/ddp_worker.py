"""One rank of DDP training, launched by torchrun (``torch.distributed.run``).

Reads RANK, LOCAL_RANK and WORLD_SIZE from the environment that torchrun sets, so the same module runs
one host (``--standalone``) or many (``--rdzv-endpoint`` on a shared host). Usage:
``python -m torch.distributed.run --nproc-per-node N -m pipelines.training.ddp_worker DATA.npz CONFIG.json OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from pipelines.model.mlp import ChurnMLP


def run(data_path: str, config: dict, out_dir: str) -> None:
    """Shard the data, train with DDP, and on rank 0 save the weights and the loss curve."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = "cpu"
    if config["device"] == "cuda":
        gpu = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    dist.init_process_group(config["backend"])
    try:
        torch.manual_seed(config["seed"])
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        )
        arrays = np.load(data_path)
        dataset = TensorDataset(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]))
        sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config["seed"]
        )
        loader = DataLoader(dataset, batch_size=config["batch_size"], sampler=sampler)
        model = ChurnMLP(arrays["x"].shape[1], tuple(config["hidden"]), config["dropout"])
        model.set_scaling(arrays["mean"], arrays["std"])
        model = model.to(device)
        ddp = DistributedDataParallel(model, device_ids=[device] if device != "cpu" else None)
        optimiser = torch.optim.AdamW(ddp.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        loss_fn = torch.nn.BCEWithLogitsLoss()
        curve = []
        for epoch in range(config["epochs"]):
            sampler.set_epoch(epoch)
            ddp.train()
            total = torch.zeros(2, device=device)
            for features, labels in loader:
                features, labels = features.to(device), labels.to(device)
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(ddp(features), labels)
                loss.backward()
                optimiser.step()
                total += torch.stack(
                    [loss.detach() * len(labels), torch.tensor(float(len(labels)), device=device)]
                )
            dist.all_reduce(total)
            curve.append(float(total[0] / total[1]))
        if rank == 0:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(out_dir) / "weights.pt")
            (Path(out_dir) / "curve.json").write_text(json.dumps(curve))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    data, config_file, out = sys.argv[1:4]
    run(data, json.loads(Path(config_file).read_text()), out)
