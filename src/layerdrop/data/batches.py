"""Training batches that resume exactly: a seeded plan per epoch, sharded by rank, restartable mid-epoch.

Every task's train loader is a ``ResumableLoader`` over an ``EpochBatches`` batch sampler:
- the batches of epoch e are a pure function of (seed, e), so a resumed run sees the same order;
- under DDP each rank takes every world-th batch (the same count on every rank), so the trainer runs
  with ``use_distributed_sampler=False`` and validation is never padded with repeated samples;
- Lightning saves the loader's ``state_dict`` (epoch, batches already trained on) in every checkpoint
  and loads it before iterating again, so a run stopped mid-epoch continues with the next batch
  instead of reshuffling (Lightning's "dataloader is not resumable" case).

Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler`` only; ``EpochBatches.sampler`` is the
batch sampler itself so that each epoch gets its own order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shuffled_blocks(n_items: int, batch_size: int, seed: int) -> Callable[[int], list[list[int]]]:
    """The plan of the LM: every epoch a seeded permutation of the items, cut into full batches
    (a last partial batch is dropped, as fixed-size token blocks make it rare and small)."""

    def plan(epoch: int) -> list[list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(n_items)
        full = n_items // batch_size * batch_size
        return order[:full].reshape(-1, batch_size).tolist()

    return plan


class EpochBatches(Sampler[list[int]]):
    """Batches of dataset positions from ``plan(epoch)``; ``shard`` splits them between DDP ranks."""

    def __init__(self, plan: Callable[[int], list[list[int]]], shard: bool = True):
        self.plan, self.shard = plan, shard
        self.epoch, self._skip = 0, 0
        self._cached: tuple[int, list[list[int]]] | None = None

    @property
    def sampler(self) -> EpochBatches:  # where Lightning looks for set_epoch
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, position: int) -> None:
        """The next iteration is epoch ``epoch`` from its ``position``-th batch on (this rank's count)."""
        self.epoch, self._skip = epoch, position

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch (every world-th one; a few at the end are left out
        so that no rank waits for a step the others never take)."""
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self.plan(self.epoch))
        batches = self._cached[1]
        rank, world = rank_world()
        if world == 1 or not self.shard:
            return batches
        return batches[rank : len(batches) // world * world : world]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        return iter(self.batches()[start:])

    def __len__(self) -> int:
        return len(self.batches())


class ResumableLoader(DataLoader):
    """A DataLoader over ``EpochBatches`` whose position survives a checkpoint (Lightning's ``_Stateful``).

    ``progress`` returns (epoch, batches of it already trained on); the data module points it at its
    trainer. The position is taken from the training loop, not from the iterator, because Lightning
    fetches one batch ahead of the one being trained on."""

    def __init__(self, *args, progress: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, EpochBatches):
            raise TypeError("ResumableLoader needs batch_sampler=EpochBatches(...)")
        self.progress = progress

    def state_dict(self) -> dict:
        epoch, position = self.progress() if self.progress else (self.batch_sampler.epoch, 0)
        return {"epoch": int(epoch), "position": int(position)}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume(state["epoch"], state["position"])


def trainer_progress(datamodule) -> Callable[[], tuple[int, int]]:
    """(epoch, batches trained on in it) of the data module's trainer, read when a checkpoint is saved."""

    def progress() -> tuple[int, int]:
        trainer = datamodule.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    return progress
