"""The accumulator protocol, in the spirit of torchmetrics: update / compute / reset / merge /
all_reduce.

* ``update(...)`` adds data and returns self. It validates everything before it changes any
  state, so a rejected batch leaves the accumulator as it was.
* ``compute()`` gives the result of everything seen so far without changing the state.
* ``reset()`` forgets the data (the settings stay).
* ``merge(other)`` folds in an accumulator of the same kind and settings that saw disjoint data.
* ``all_reduce(group)`` makes every rank of a ``torch.distributed`` group hold the state of all
  ranks' data. The generic version gathers every rank's accumulator (pickled, on the CPU) and
  merges them in rank order into an empty one, so every rank ends with the same state;
  accumulators with large states override it with collectives on their tensors.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from typing_extensions import Self


def collective_device(group: Any = None) -> torch.device:
    """Where tensors for a torch.distributed collective must be: NCCL reduces CUDA tensors only,
    gloo takes CPU tensors."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """The sum of `t` over the ranks of a group (a new tensor on t's device)."""
    import torch.distributed as dist

    out = t.to(collective_device(group)).clone()
    dist.all_reduce(out, group=group)
    return out.to(t.device)


class Accumulator(abc.ABC):
    @abc.abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> Self: ...

    @abc.abstractmethod
    def compute(self) -> Any: ...

    @abc.abstractmethod
    def reset(self) -> None: ...

    @abc.abstractmethod
    def merge(self, other: Self) -> Self: ...

    def settings(self) -> tuple:
        """What must match for two accumulators to merge (their constructor arguments)."""
        return ()

    def check_mergeable(self, other: Any) -> None:
        if type(other) is not type(self):
            raise TypeError(f"other must be a {type(self).__name__}; got {type(other).__name__}")
        if other.settings() != self.settings():
            raise ValueError(
                f"can only merge {type(self).__name__}s with the same settings: {self.settings()} != {other.settings()}"
            )

    def portable(self) -> Self:
        """This accumulator with its state on the CPU, for pickling across ranks (default: self)."""
        return self

    def all_reduce(self, group: Any = None) -> Self:
        """Gather-then-merge across a torch.distributed group (see the module docs); returns self."""
        import torch.distributed as dist

        gathered: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, self.portable(), group=group)
        self.reset()
        for other in gathered:
            self.merge(other)
        return self
