"""The seed families' pytest plugin: registered by the trainclaims plugin when a family that names
it (``Family(plugin=trainclaims.families.seed.PLUGIN)``) joins the run's catalogue. It gives the
seed experiments what they need from pytest:

- the fixtures ``tier`` (each data tier in turn), ``data_store`` (every tier, loaded at most once
  per session, kept on each device asked for), ``data`` (the tier as tensors on the test's
  device; a missing data set skips with the fix) and ``trainer`` (``trainer(config, data)``: the
  session's training runs, cached so that claims share them, with progress lines for long ones);
- the data-tier axis of the trainclaims tests that ask for ``tier``;
- under pytest-xdist, the group of tests that share a training run (one worker trains it), and the
  runs a worker trained, sent to the controller for the report parts (``ReportContext.extra``:
  ``training_runs``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from trainclaims.families.seed import TRAINING_RUNS
from trainclaims.families.seed.data import TIERS, DataCorrupt, DataMissing, Dataset, DataStore
from trainclaims.families.seed.engine import ProgressFn, TrainResult
from trainclaims.families.seed.runs import TrainingCache
from trainclaims.preflight import resolve_root

_WORKER_KEY = "seed.training_runs"  # a worker's runs, as plain data, in what it sends the controller
PROGRESS_AFTER_S = 5.0  # a training run this long starts printing progress ...
PROGRESS_EVERY_S = 10.0  # ... at most once this often


@dataclass
class SeedState:
    """What the plugin keeps for a session: the data, the training runs, the runs a worker sent."""

    store: DataStore | None = None
    cache: TrainingCache | None = None
    arrived: dict[tuple[Any, str, str], TrainResult] = field(default_factory=dict)


STATE = pytest.StashKey[SeedState]()


def state(config: pytest.Config) -> SeedState:
    if STATE not in config.stash:
        config.stash[STATE] = SeedState()
    return config.stash[STATE]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def tier(request: pytest.FixtureRequest) -> str:
    """Each data tier in turn: synthetic, fashion-mnist, cifar10."""
    return request.param


@pytest.fixture(scope="session")
def data_store(request: pytest.FixtureRequest) -> DataStore:
    """Every data tier, loaded at most once per session and kept on each device asked for."""
    seed = state(request.config)
    if seed.store is None:
        option = request.config.getoption
        seed.store = DataStore(resolve_root(option("--data-root")), option("--download"))
    return seed.store


def load_tier(store: DataStore, name: str, device: str) -> Dataset:
    """The tier on the device; skips (with the fix) where its data is missing here."""
    try:
        return store.get(name, device)
    except DataMissing as err:
        pytest.skip(str(err))
    except DataCorrupt as err:  # an error of the test, in one line that names the file
        pytest.fail(f"DataCorrupt: {err}", pytrace=False)


@pytest.fixture
def data(data_store: DataStore, tier: str, device: str) -> Dataset:
    """The ``tier`` data set as tensors on ``device``."""
    return load_tier(data_store, tier, device)


@pytest.fixture(scope="session")
def trainer(request: pytest.FixtureRequest) -> TrainingCache:
    """``trainer(config, data) -> TrainResult``, cached for the session so claims share runs."""
    seed = state(request.config)
    if seed.cache is None:
        seed.cache = TrainingCache(progress_factory=progress_factory(request.config))
    return seed.cache


def progress_factory(config: pytest.Config) -> Callable[[str], ProgressFn | None]:
    """``make(label)`` -> a callback for one training run that prints a progress line past pytest's
    output capture (at most every 10 s, once a run has taken 5 s); None where output is quiet."""
    tr = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")

    def make(label: str) -> ProgressFn | None:
        if tr is None or config.getoption("verbose") < 0:
            return None
        start = time.perf_counter()
        last = [start]

        def progress(epoch: int, epochs: int, loss: float, acc: float) -> None:
            now = time.perf_counter()
            if now - start >= PROGRESS_AFTER_S and (now - last[0] >= PROGRESS_EVERY_S or epoch == epochs):
                last[0] = now
                # during a test the output is captured: write past the capture, to the terminal
                with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                    took = now - start
                    tr.write_line(
                        f"  [train] {label}: epoch {epoch}/{epochs} loss {loss:.4g} test acc {acc:.1%} ({took:.0f}s)"
                    )

        return progress

    return make


# --------------------------------------------------------------------------- the trainclaims hooks


def pytest_trainclaims_parametrize(metafunc: pytest.Metafunc, own: set[str]) -> None:
    if "tier" in metafunc.fixturenames and "tier" not in own:  # the data-tier axis
        metafunc.parametrize("tier", TIERS, indirect=True)


def pytest_trainclaims_xdist_group(item: pytest.Item) -> str | None:
    """Tests that share the session's training runs on one data tier, device and mode: one worker."""
    if "trainer" not in getattr(item, "fixturenames", ()):
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    mode = getattr(params.get("numerics"), "name", "ieee")
    return f"{params.get('tier', 'any')}-{params.get('device', 'any')}-{mode}"


def pytest_trainclaims_worker_output(config: pytest.Config) -> dict | None:
    cache = state(config).cache
    return {_WORKER_KEY: [r.to_state() for r in cache.results().values()]} if cache else None


def pytest_trainclaims_node_down(config: pytest.Config, output: dict) -> None:
    seed = state(config)
    for saved in output.get(_WORKER_KEY, []):
        run = TrainResult.from_state(saved)
        seed.arrived[(run.config, run.dataset, run.device)] = run


def pytest_trainclaims_report_context(config: pytest.Config) -> dict | None:
    seed = state(config)
    runs = dict(seed.arrived) | (seed.cache.results() if seed.cache else {})
    return {TRAINING_RUNS: runs}
