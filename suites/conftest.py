"""What the suite's self-tests share: the ini of a project whose tests are all trainclaims tests,
and a pytester project made of it (``suite``) with no data reachable and none of the environment an
outer run may have set (an xdist worker's id, GitHub's step summary); and ``one_thread`` for the
tests of tiny models."""

from __future__ import annotations

import pytest

OPT_IN = "[pytest]\ntrainclaims_paths = .\n"  # the ini of a project whose tests are all trainclaims tests


@pytest.fixture
def opt_in() -> str:
    return OPT_IN


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.Pytester:
    """A pytester dir (the installed plugin loads itself) that opts every test in, with no data
    reachable (an empty data root, no system data); the inner runs are not xdist workers even where
    this test runs in one (pytest-benchmark disables itself wherever PYTEST_XDIST_WORKER is set),
    and write no GitHub step summary."""
    pytester.makeini(OPT_IN)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (tmp_path / "no-data").mkdir(exist_ok=True)
    monkeypatch.setenv("TRAINCLAIMS_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("TRAINCLAIMS_SYSTEM_DATA", "")
    return pytester


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny models (the HF family's, a GPT-2 from a small config) run
    5x faster on it than on two contending with a busy machine's other processes (a Trainer run of
    3 steps: 1.0 s against 5.1 s at load 4)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
