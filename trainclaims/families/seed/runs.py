"""The session's training runs: a cache keyed by (config, data set, device), so that claims share
runs, and the choice of engine for several configs at once (one by one, side by side in threads,
or batched over variants). It sits above the engines; none of them imports it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from trainclaims import numerics
from trainclaims.families.seed.batched import SHARED, can_batch, train_batched
from trainclaims.families.seed.data import Dataset
from trainclaims.families.seed.engine import ProgressFn, TrainConfig, TrainResult, train
from trainclaims.families.seed.side_by_side import train_side_by_side


@dataclass
class TrainingCache:
    """Session cache: several claims share one training run of the same (config, data, device)."""

    progress_factory: Callable[[str], ProgressFn | None] | None = None
    _results: dict[tuple[TrainConfig, str, str], TrainResult] = field(default_factory=dict)

    def __call__(self, config: TrainConfig, data: Dataset) -> TrainResult:
        key = (config, data.name, str(data.device))
        if key not in self._results:
            label = f"{data.name}[{data.device}] {config.describe()}"
            progress = self.progress_factory(label) if self.progress_factory else None
            self._results[key] = train(config, data, progress)
        else:
            numerics.note(self._results[key].acted)  # the mode acted for this test too, when it trained
        return self._results[key]

    def results(self) -> dict[tuple[TrainConfig, str, str], TrainResult]:
        """Every run so far, by (config, data set, device)."""
        return dict(self._results)

    def many(self, configs: dict[str, TrainConfig], data: Dataset) -> dict[str, TrainResult]:
        """Several variants, each cached as if trained alone. On accelerators they are trained
        together (trainclaims.families.seed.batched: one launch-bound run instead of V). On CPU, where batching
        measured no faster (2 cores, 9 seed-000 variants: batched 1.08-1.12x on fashion-mnist for 1
        epoch, about 2x slower on the 3072-wide synthetic tier), they run side by side in threads,
        one intra-op thread each (:func:`train_side_by_side`)."""
        todo = [c for c in configs.values() if (c, data.name, str(data.device)) not in self._results]
        if todo and data.device.type != "cpu":
            # one batched run per group of variants that can share batches (same seed, epochs,
            # numerics...); other models, and the autocast and compile modes, train one by one
            groups: dict[tuple, list[TrainConfig]] = {}
            for config in todo:
                if can_batch(config):
                    groups.setdefault(tuple(getattr(config, f) for f in SHARED), []).append(config)
            for group in groups.values():
                label = f"{data.name}[{data.device}] {len(group)} variants batched"
                progress = self.progress_factory(label) if self.progress_factory else None
                for config, result in zip(group, train_batched(group, data, progress), strict=True):
                    self._results[(config, data.name, str(data.device))] = result
        else:
            # a mode may not run in threads (torch.compile's dynamo): its variants train one by one
            threaded = [c for c in todo if not c.mode.compiles]  # dynamo is not for threads: compiled runs one by one
            factory = self.progress_factory

            def progress_of(config: TrainConfig) -> ProgressFn | None:
                return factory(f"{data.name}[{data.device}] {config.describe()}") if factory else None

            if len(threaded) > 1:
                for config, result in zip(threaded, train_side_by_side(threaded, data, progress_of), strict=True):
                    self._results[(config, data.name, str(data.device))] = result
        return {name: self(config, data) for name, config in configs.items()}
