"""Several data sources drawn with weights (`data.sources`): e.g. your concept's folder plus the
procedural shapes the model already knows (prior preservation), or two folders, or a latent cache.

    data:
      sources:
        - {kind: folder, path: my_concept, weight: 1}
        - {kind: shapes, weight: 1}              # keeps what the demo model knew
        - {kind: cache, path: cache/other, weight: 0.5}

One epoch has as many slots as the sources have items together, shared out by weight: source s
fills round(total · w_s / Σw) slots (at least one), so a small folder is repeated and a large set
subsampled. BatchPlan permutes the slots per epoch as for one source; slot j of source s in epoch
e is the source's item perm(seed, s, cycle)[k mod n_s] with k = e · slots_s + j, cycle = k // n_s:
each source goes through all its items before repeating one, and everything follows from
(seed, epoch, index) like the rest of the data pipeline (a resumed run draws the same items).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .config import ConfigError, TrainConfig

def _source_config(config: TrainConfig, source: dict[str, Any]) -> TrainConfig:
    """The config that builds one source's dataset on its own."""
    sub = copy.deepcopy(config)
    d = sub.data
    d.sources, d.cache_dir = [], None
    d.kind, d.path = source["kind"], source.get("path")
    if "repeats" in source:
        d.repeats = int(source["repeats"])
    if source["kind"] == "cache":  # checked against the data the cache was built from
        manifest = Path(source["path"]) / "manifest.json"
        match = json.loads(manifest.read_text()).get("match", {}) if manifest.is_file() else {}
        d.kind, d.path, d.cache_dir = match.get("data.kind", "folder"), match.get("data.path"), source["path"]
    return sub


def build_sources(config: TrainConfig, build_dataset: Callable[[TrainConfig], Dataset]) -> MixedDataset:
    """The mixed dataset; `build_dataset` (train.data's, passed in: data imports this module) builds each source."""
    datasets = [build_dataset(_source_config(config, s)) for s in config.data.sources]
    for n, (source, dataset) in enumerate(zip(config.data.sources, datasets, strict=True), 1):
        if len(dataset) == 0:
            raise ConfigError(f"data.sources[{n}] ({source['kind']} {source.get('path', '')}) holds no items")
    return MixedDataset(datasets, [float(s.get("weight", 1)) for s in config.data.sources], config.run.seed,
                        [f"{s['kind']} {s.get('path') or ''}".strip() for s in config.data.sources])


class MixedDataset(Dataset):
    """The sources' items in weighted slots (see the module doc); item(index, epoch) like a bucketed folder."""

    def __init__(self, datasets: list[Dataset], weights: list[float], seed: int, names: list[str] | None = None) -> None:
        self.datasets, self.weights, self.seed = datasets, weights, seed
        self.names = names or [f"source {n}" for n in range(1, len(datasets) + 1)]
        total = sum(len(d) for d in datasets)
        self.slots = [max(1, round(total * w / sum(weights))) for w in weights]
        self.starts = [sum(self.slots[:s]) for s in range(len(datasets))]

    def __len__(self) -> int:
        return sum(self.slots)

    def locate(self, index: int, epoch: int) -> tuple[int, int]:
        """(source, the source's item index) of a slot in an epoch."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        source = max(s for s, start in enumerate(self.starts) if start <= index)
        k = epoch * self.slots[source] + index - self.starts[source]
        cycle, position = divmod(k, len(self.datasets[source]))
        return source, _permutation(len(self.datasets[source]), self.seed, source, cycle)[position]

    def item(self, index: int, epoch: int):
        source, inner = self.locate(index, epoch)
        dataset = self.datasets[source]
        item = getattr(dataset, "item", None)  # bucketed images draw their crop from (seed, epoch, index)
        return item(inner, epoch) if item is not None else dataset[inner]

    def __getitem__(self, index: int):
        return self.item(index, 0)


@lru_cache(maxsize=64)
def _permutation(length: int, seed: int, source: int, cycle: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_033 + source * 7_919 + cycle)
    return tuple(torch.randperm(length, generator=generator).tolist())
