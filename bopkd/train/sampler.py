"""The training batch sampler: a seeded, sharded, resumable stream of ``(index, epoch)`` batches.

Every item of a batch is a key ``(index, epoch)``: :class:`~bopkd.data.torch_dataset.BopTorchDataset`
seeds its augmentation with ``(seed, epoch, index)``, so a run resumed at iteration ``i`` sees exactly
the batches, and the augmented images, of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Infinite (or ``total_iters``-long) stream of batches of ``(index, epoch)`` keys for one process.

    Epoch ``e`` visits ``DistributedSampler(range(n), world_size, rank, shuffle, seed).set_epoch(e)``'s
    indices (a seeded permutation, padded to a multiple of the world size and split across ranks);
    batches run across epoch boundaries. Batch ``i`` (0-based) of the stream depends only on
    ``(n, batch_size, seed, rank, world_size, i)``, so starting at ``start_iter`` continues a stream
    exactly.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        total_iters: int | None = None,
        shuffle: bool = True,
    ):
        if n < 1:
            raise ValueError("ResumableBatchSampler needs a non-empty dataset")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_iter, self.total_iters, self.shuffle = int(start_iter), total_iters, shuffle

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices of ``epoch``, in visiting order."""
        s = torch.utils.data.DistributedSampler(
            range(self.n),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=False,
        )
        s.set_epoch(epoch)
        return list(s)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.epoch_indices(0))
        pos = self.start_iter * self.batch_size
        epoch, offset = divmod(pos, per_epoch)
        it = self.start_iter
        buf: list[tuple[int, int]] = []
        while self.total_iters is None or it < self.total_iters:
            for idx in self.epoch_indices(epoch)[offset:]:
                buf.append((idx, epoch))
                if len(buf) == self.batch_size:
                    yield buf
                    buf = []
                    it += 1
                    if self.total_iters is not None and it >= self.total_iters:
                        return
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:
        if self.total_iters is None:
            raise TypeError("an infinite ResumableBatchSampler has no length")
        return max(0, self.total_iters - self.start_iter)
