"""How the ranks hold the model: replicated (DDP, or the one in-process rank) or sharded (FSDP2).

``strategy: ddp`` keeps a whole copy of the model and its optimiser state on every rank and averages the
gradients; ``strategy: fsdp`` shards parameters, gradients and optimiser state over the ranks with FSDP2's
``fully_shard`` (every linear layer, then the whole MLP), so each rank holds about ``1 / world_size`` of them:
the path for a model bigger than one worker. Either way the logged model is the same full ``ChurnMLP`` state
dict, so registration, evaluation, ONNX export and serving do not change.

Checkpoints: a replicated model's weights and optimiser state travel in rank 0's ``state.pt``; a sharded one is
saved and loaded with torch's distributed checkpoint (``torch.distributed.checkpoint``), every rank writing its
own shards into the checkpoint's ``dcp/`` folder, and reloads onto any number of ranks. Each holder also reads
the other's: an fsdp job whose world changes across one rank (one rank holds the model whole) resumes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

from pipelines.data import storage

STRATEGIES = ("ddp", "fsdp")
CPU_BUCKET_MB = 25  # DDP's own cap, set explicitly: then its first bucket is not 1 MiB (see Replicated)


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


class Replicated:
    """A whole model on every rank: DDP over several ranks, the bare module on one."""

    name = "ddp"

    def __init__(self, model: nn.Module, world_size: int, device: str):
        self.model = model
        self.trained: nn.Module = model
        if world_size > 1 and device == "cpu":
            # DDP's default puts the gradients ready first into a 1 MiB bucket of their own, whose all-reduce
            # overlaps the rest of the backward pass: on a GPU the copy engines and the network do that work
            # beside the compute; on the CPU gloo's thread takes a core from the backward it overlaps, and a
            # step pays two all-reduces' latency. One cap for every bucket (the first included) makes a step
            # of a model under CPU_BUCKET_MB one all-reduce: see the README's "Training" figures.
            self.trained = DistributedDataParallel(model, bucket_cap_mb=CPU_BUCKET_MB)
        elif world_size > 1:
            self.trained = DistributedDataParallel(model, device_ids=[device])

    def full_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights, on the CPU (a copy)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_full(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def shared_state(self, optimiser: torch.optim.Optimizer) -> dict[str, Any]:
        """The whole model and optimiser state, keyed by parameter name (not by the optimiser's numbering), so
        that a sharded holder can load it too (:meth:`Sharded.restore`)."""
        model, optimised = get_state_dict(self.model, optimiser)
        return {"model": model, "optimiser": optimised}

    def save_shards(self, folder: str, optimiser: torch.optim.Optimizer) -> None:
        """Nothing: the replicated state travels in rank 0's ``state.pt``."""

    def restore(self, folder: str, shared: dict[str, Any], optimiser: torch.optim.Optimizer) -> None:
        """From ``state.pt``; or, saved sharded (an fsdp job that lost ranks down to one), from its ``dcp/``
        shards, read whole by this process."""
        if "model" in shared:
            model, optimised = shared["model"], shared["optimiser"]
        else:
            import torch.distributed.checkpoint as dcp

            model, optimised = get_state_dict(self.model, optimiser)
            state: dict[str, Any] = {"model": model, "optimiser": optimised}
            dcp.load(state, checkpoint_id=_local_path(storage.join(folder, "dcp")), no_dist=True)
            model, optimised = state["model"], state["optimiser"]
        set_state_dict(self.model, optimiser, model_state_dict=model, optim_state_dict=optimised)

    def local_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class Sharded:
    """FSDP2: parameters, gradients and optimiser state sharded over the ranks."""

    name = "fsdp"

    def __init__(self, model: nn.Module, world_size: int, device: str):
        from torch.distributed.fsdp import fully_shard

        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        self.model = model
        self.trained = model

    def _options(self, **extra: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **extra)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights, gathered on rank 0 (a collective: every rank calls it; the others get
        an empty dict)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state: Any = get_model_state_dict(self.model, options=self._options(cpu_offload=True))
        return dict(state)

    def load_full(self, state: dict[str, torch.Tensor]) -> None:
        """Load whole weights held by rank 0 into every rank's shards (a collective)."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        full: Any = state
        set_model_state_dict(self.model, full, options=self._options(broadcast_from_rank0=True))

    def shared_state(self, optimiser: torch.optim.Optimizer) -> dict[str, Any]:
        return {}  # the model and optimiser are in the checkpoint's dcp/ folder

    def save_shards(self, folder: str, optimiser: torch.optim.Optimizer) -> None:
        import torch.distributed.checkpoint as dcp

        model_state, optimiser_state = get_state_dict(self.model, optimiser)
        dcp.save(
            {"model": model_state, "optimiser": optimiser_state},
            checkpoint_id=_local_path(storage.join(folder, "dcp")),
        )

    def restore(self, folder: str, shared: dict[str, Any], optimiser: torch.optim.Optimizer) -> None:
        """From the ``dcp/`` shards, onto any number of ranks; or, saved whole (a ddp checkpoint, or one rank's:
        an fsdp job that grew from one rank), from ``state.pt``, which every rank has read."""
        import torch.distributed.checkpoint as dcp

        if "model" in shared:
            set_state_dict(
                self.model,
                optimiser,
                model_state_dict=shared["model"],
                optim_state_dict=shared["optimiser"],
                options=self._options(),
            )
            return
        model_state, optimiser_state = get_state_dict(self.model, optimiser)
        state: dict[str, Any] = {"model": model_state, "optimiser": optimiser_state}
        dcp.load(state, checkpoint_id=_local_path(storage.join(folder, "dcp")))
        set_state_dict(
            self.model, optimiser, model_state_dict=state["model"], optim_state_dict=state["optimiser"]
        )

    def local_parameters(self) -> int:
        from torch.distributed.tensor import DTensor

        return sum(
            p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in self.model.parameters()
        )


def holder(strategy: str, model: nn.Module, world_size: int, device: str) -> Replicated | Sharded:
    """How ``model`` is held: sharded only for ``fsdp`` over more than one rank (one rank has nothing to shard)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown training strategy {strategy!r}; choose {' or '.join(STRATEGIES)}")
    if strategy == "fsdp" and world_size > 1:
        return Sharded(model, world_size, device)
    return Replicated(model, world_size, device)
