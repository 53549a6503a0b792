"""Checkpoints of one training job, on the data root, that a restarted rank or a retried task resumes from.

A checkpoint is a folder ``checkpoints/e<epoch>-s<step>-w<world size>-<token>`` (the position the next step
starts from; the token is drawn by rank 0 for each launch, so a launch never writes into a folder that an earlier
one's ``latest.json`` may still point to):

    state.pt       rank 0: model, optimiser, the best epoch's loss and weights, the curves, the global step
    rank-<r>.pt    every rank: its RNG states and its partial sums of the epoch in progress

Every file is written under a temporary name and renamed; once every rank has written its file (a barrier),
rank 0 points ``checkpoints/latest.json`` at the folder and removes the older ones. A rank that dies half-way
through a checkpoint leaves ``latest.json`` on the previous complete one. The data position needs nothing
more than epoch and step: each epoch's order of a rank's rows is a function of the seed, the epoch and the rank,
within the rank's part of the split, cut from the sequence of rows ``latest.json``'s ``layout`` names
(:func:`pipelines.training.shards.layout`).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fsspec.core import url_to_fs

from pipelines.data import storage

LATEST = "latest.json"


@dataclass(frozen=True)
class Position:
    """Where training resumes: ``step`` steps of ``epoch`` are done (``step`` 0: the epoch has not begun)."""

    epoch: int
    step: int

    @property
    def folder(self) -> str:
        return f"e{self.epoch:05d}-s{self.step:09d}"


@dataclass(frozen=True)
class Restored:
    position: Position
    shared: dict[str, Any]  # rank 0's state.pt
    own: dict[str, Any] | None  # this rank's rank-<r>.pt; None when the world size changed
    folder: str  # the checkpoint's folder (a sharded model's dcp/ is in it)
    from_world_size: int | None = None  # set when the world size changed
    layout_changed: bool = False  # the split was written again since, as another sequence of rows


def save_torch(obj: Any, uri: str) -> None:
    """``torch.save`` to any fsspec URI, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    storage.write_bytes_atomic(uri, buffer.getvalue())


def _load(uri: str) -> Any:
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    """The CPU generator's state and, on a GPU rank, its own device's (not every device's: a restart may land
    on a host with fewer)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpoints:
    """The checkpoints of one job, as rank ``rank`` of ``world_size`` sees them."""

    def __init__(
        self,
        job_uri: str,
        rank: int,
        world_size: int,
        barrier: Callable[[], None] | None = None,
        from_rank0: Callable[[Any], Any] | None = None,
        layout: str = "",
    ):
        """``from_rank0(value)`` returns rank 0's ``value`` on every rank (a broadcast; identity for one rank):
        rank 0 alone reads the pointer and draws the launch's token, so every rank agrees on both even when
        the data root shows one host an older listing than another. ``layout``: the training split's sequence
        of rows (:func:`pipelines.training.shards.layout`), which a data position is a position in."""
        self.root = storage.join(job_uri, "checkpoints")
        self.rank, self.world_size, self.layout = rank, world_size, layout
        self.barrier = barrier or (lambda: None)
        share = from_rank0 or (lambda value: value)
        self.token = share(uuid.uuid4().hex[:8] if rank == 0 else None)
        self._share = share

    def restore(self) -> Restored | None:
        """The last checkpoint, if any. One written by another number of ranks (an elastic launch that lost or
        gained a node), or from a training split written again since as another sequence of rows, gives its weights,
        optimiser and curves, and the epoch's rows start over (a rank's part and its place in it follow from
        the world size and the sequence): the rows the epoch had reached are seen twice in it; ``own`` is then None."""
        uri = storage.join(self.root, LATEST)
        # Rank 0's pointer and sequence decide for every rank (one that read the manifest while the split was
        # written again names it by its cut): ranks resumed at other steps would fall out of step in their collectives.
        pointer, layout = self._share(
            (storage.read_json(uri) if storage.exists(uri) else None, self.layout) if self.rank == 0 else None
        )
        if pointer is None:
            return None
        position = Position(pointer["epoch"], pointer["step"])
        folder = storage.join(self.root, pointer["folder"])
        shared = _load(storage.join(folder, "state.pt"))
        other_world = pointer["world_size"] != self.world_size
        other_cut = pointer.get("layout") != layout  # a checkpoint from before layouts were kept, too
        if other_world or other_cut:
            return Restored(
                Position(position.epoch, 0),
                shared,
                None,
                folder,
                from_world_size=pointer["world_size"] if other_world else None,
                layout_changed=other_cut,
            )
        return Restored(position, shared, _load(storage.join(folder, f"rank-{self.rank}.pt")), folder)

    def save(
        self,
        position: Position,
        shared: Callable[[], dict[str, Any]],
        own: dict[str, Any],
        shards: Callable[[str], None] = lambda folder: None,
    ) -> None:
        """Write this rank's part (and on rank 0 the shared state; ``shards(folder)`` is called on every rank,
        for a sharded model's distributed checkpoint), then, once all have, commit the folder."""
        name = f"{position.folder}-w{self.world_size}-{self.token}"
        folder = storage.join(self.root, name)
        shards(folder)
        if self.rank == 0:
            save_torch(shared(), storage.join(folder, "state.pt"))
        save_torch(own, storage.join(folder, f"rank-{self.rank}.pt"))
        self.barrier()
        if self.rank == 0:
            storage.write_json_atomic(
                storage.join(self.root, LATEST),
                {
                    "epoch": position.epoch,
                    "step": position.step,
                    "world_size": self.world_size,
                    "layout": self.layout,
                    "folder": name,
                },
            )
            self._remove_all_but(name)

    def _remove_all_but(self, keep: str) -> None:
        fs, path = url_to_fs(self.root)
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name != keep and not name.startswith(LATEST):  # latest.json, and its temporary files
                fs.rm(entry, recursive=True)
