"""A batch sampler indexed by training step, so a resumed run sees exactly the batches it
would have seen, on any number of ranks, without Lightning's distributed sampler."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start_step .. total_steps-1``, this rank's share of the global batch
    as ``(item_index, item_seed)`` pairs. Items run through seeded permutations, epoch after
    epoch; ``item_seed`` makes each item's random point subsets a function of its position."""

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, total_steps: int = 1, step_fn=None):
        if num_items <= 0:
            raise ValueError("no training items: prepare data first (vat3d prepare)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.total_steps = start_step, max(total_steps, start_step)
        self._perm_epoch, self._perm = -1, None
        # ``step_fn`` (e.g. ``lambda: trainer.global_step``) is read when iteration starts: a loop that
        # re-creates its iterator after a resume continues at the step it is really at
        self.step_fn = step_fn

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.num_items, generator=gen), epoch
        return self._perm

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, i = divmod(position, self.num_items)
            out.append((int(self._permutation(epoch)[i]), self.seed * 7_919 + position))
        return out

    def __iter__(self):
        start = self.step_fn() if self.step_fn is not None else self.start_step
        for step in range(start, self.total_steps):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return self.total_steps - self.start_step


class SeededItems(Dataset):
    """Adapts a dataset with ``item(index, seed)`` to ``(index, seed)`` keys."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, key)
        return self.dataset.item(index, seed=seed)


class StepDataModule(pl.LightningDataModule):
    """Training batches indexed by step (:class:`StepBatchSampler`, sharded by rank) and a fixed set
    of validation items. Subclasses set ``batch_size``, ``num_workers``, ``seed``, ``max_steps``,
    ``val_items`` and define ``dataset(split)`` (items with ``item(index, seed)``)."""

    batch_size: int
    num_workers: int
    seed: int
    max_steps: int
    val_items: int

    def dataset(self, split: str):  # pragma: no cover - interface
        raise NotImplementedError

    def _loader(self, dataset, **kwargs) -> DataLoader:
        # pinned host memory when training on a GPU: batches copy to it asynchronously
        trainer = self.trainer
        pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(SeededItems(dataset), num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=pin, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        trainer = self.trainer
        sampler = StepBatchSampler(
            len(dataset), self.batch_size, seed=self.seed,
            rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1,
            start_step=trainer.global_step if trainer else 0, total_steps=self.max_steps,
            step_fn=(lambda: trainer.global_step) if trainer else None)
        return self._loader(dataset, batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        dataset = self.dataset("val")
        if len(dataset) == 0:  # tiny datasets: validate on fixed items of the training split
            dataset = self.dataset("train")
        n = min(len(dataset), self.val_items)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        # every rank needs at least one item (Lightning refuses an empty loader): with fewer validation
        # items than ranks, some items are validated twice
        keys = [(i % n, 1_000_000 + i % n) for i in range(max(n, world))][rank::world]
        return self._loader(dataset, batch_size=self.batch_size, sampler=keys)
