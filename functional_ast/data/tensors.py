"""Any tensors as a run's data: `TensorData(train, test)`, where each side is a mapping of named tensors with the
same first dimension (features, targets, masks: whatever the task's `inputs` and `targets` take apart). A batch is
those rows on the device, with "index"; nothing is augmented unless the task's `transform` is given a generator.

    data = TensorData({"x": features, "y": targets}, {"x": test_features, "y": test_targets})
    fa.fit(build, data, None, config, task=my_task)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from tensordict import TensorDict

from functional_ast.core.checks import ConfigError
from functional_ast.data.stats import dataset_digest


def _rows(side: Mapping[str, torch.Tensor] | TensorDict, name: str) -> TensorDict:
    if isinstance(side, TensorDict):
        return side
    sizes = {k: v.shape[0] for k, v in side.items() if isinstance(v, torch.Tensor)}
    if not sizes or len(set(sizes.values())) != 1 or len(sizes) != len(side):
        raise ConfigError(f"{name} data must be tensors with the same first dimension (rows), got "
                          f"{ {k: tuple(getattr(v, 'shape', ())) for k, v in side.items()} }")
    return TensorDict(dict(side), batch_size=[next(iter(sizes.values()))])


@dataclass
class TensorData:
    """A `data.source.DataSource` over named tensors: training rows and test rows."""

    train: TensorDict
    test: TensorDict
    device: torch.device
    name: str = "tensors"

    @classmethod
    def of(cls, train, test, device=None, name: str = "tensors") -> "TensorData":
        device = torch.device(device) if device is not None else torch.device("cpu")
        return cls(_rows(train, "train"), _rows(test, "test"), device, name)

    @property
    def num_samples(self) -> int:
        return int(self.train.batch_size[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        first = next(iter(self.train.values()))
        return tuple(first.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None,
              transform: Callable | None = None) -> TensorDict:
        rows = self.train[index.to(self.train.device)].to(self.device)
        rows["index"] = index.to(self.device)
        return rows

    def test_batches(self, batch_size: int) -> Iterator[TensorDict]:
        n = int(self.test.batch_size[0])
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            rows = self.test[index].to(self.device)
            rows["index"] = index.to(self.device)
            yield rows

    def subset(self, train_index: torch.Tensor, test_index: torch.Tensor) -> "TensorData":
        return TensorData(self.train[train_index.cpu()], self.train[test_index.cpu()], self.device, self.name)

    def describe(self) -> dict:
        return dict(name=self.name, digest=None, train_samples=self.num_samples,
                    test_samples=int(self.test.batch_size[0]), keys=sorted(self.train.keys()))

    def _digest(self, side: TensorDict) -> str:
        h = hashlib.sha256()
        for key in sorted(side.keys()):
            value = side[key]
            h.update(f"{key}:{dataset_digest(value, torch.zeros(0))}".encode())
        return h.hexdigest()[:12]

    def fingerprint(self) -> str:
        return self._digest(self.train)

    def test_fingerprint(self) -> str:
        return self._digest(self.test)

    def facts(self) -> dict:
        return {f"{k}_shape": "x".join(map(str, v.shape[1:])) or "scalar" for k, v in self.train.items()}

    def about(self) -> str:
        return f"{self.num_samples} training rows of {self.name}"
