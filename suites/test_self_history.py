"""Self-tests of the run history (trainclaims/history): the store across schema versions and with
two writers at once, a folder that is not a history, the step detection on series with known
steps and on unchanged ones, each benchmark's noise at the gate, the pull-request comment of two
runs, and the static site as a real headless browser renders it (Debian's chromium)."""

from __future__ import annotations

import ast
import itertools
import json
import math
import random
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torchvision  # noqa: F401  imported before pytester's in-process runs (see test_self_plugin)

from trainclaims.benchgate import DEFAULT_LIMIT, BenchRow, benchmark_noise
from trainclaims.history import check_folder, detect_steps, load, record_run
from trainclaims.history.__main__ import main
from trainclaims.history.noise import history_noise
from trainclaims.history.store import MARKER, RUNS

pytestmark = pytest.mark.trainclaims

BENCH = "suites/test_bench_throughput.py::test_seed_fc_training_step_throughput[cpu]"
GAP_TEST = "suites/test_s002_batchnorm.py::test_accumulation_equals_the_larger_batch_in_each_numerics_mode[cpu-ieee]"
TIER_TEST = "suites/test_s000_input_scaling.py::test_scaling_sweep[cpu-synthetic]"


def environment(i: int, torch: str = "2.14.1+cpu", machine: str = "AMD EPYC") -> dict[str, Any]:
    return {
        "date": f"2026-11-{i + 1:02d}T10:00:00+00:00",
        "commit": f"{i:04d}abcdef12",
        "torch": torch,
        "cuda": None,
        "processor": machine,
        "machine": "x86_64",
        "devices": {"cpu": "x86_64", "cuda": "absent: CUDA not available"},
        "numerics_modes": ["ieee"],
    }


def claims_report(i: int, gap: float = 2e-8, verdict: str = "holds", torch: str = "2.14.1+cpu") -> dict[str, Any]:
    """A small claims.json: S002-07 with a gap against its bound, S001-01 without numbers."""
    outcome = "passed" if verdict == "holds" else "failed"
    reason = "" if verdict == "holds" else f"AssertionError: gap {gap:.3g} (needs <= 0.0001): does not hold"
    evidence = {"check": "accumulation", "gap": gap, "bound": 1e-4, "expect": "equal", "k": 4}
    return {
        "schema": 3,
        "environment": environment(i, torch),
        "claims": [
            {
                "id": "S001-01",
                "family": "S001",
                "statement": "ReLU is max(0,x).",
                "verdict": "holds",
                "modes": {"ieee": {"verdict": "holds", "why": ""}},
                "tests": [
                    {
                        "test": TIER_TEST,
                        "claims": ["S001-01"],
                        "outcome": "passed",
                        "device": "cpu",
                        "tier": "synthetic",
                    }
                ],
            },
            {
                "id": "S002-07",
                "family": "S002",
                "statement": "Accumulating k micro-batches equals one k times larger batch.",
                "verdict": verdict,
                "why": "" if verdict == "holds" else "a test of the claim failed",
                "modes": {"ieee": {"verdict": verdict, "why": ""}},
                "tests": [
                    {
                        "test": GAP_TEST,
                        "claims": ["S002-07"],
                        "outcome": outcome,
                        "reason": reason,
                        "device": "cpu",
                        "numerics": "ieee",
                        "evidence": evidence,
                    }
                ],
            },
        ],
    }


def bench_report(i: int, factor: float = 1.0, seed: int = 0, drift: float = 0.0, spread: float = 0.1) -> dict[str, Any]:
    """A small benchmarks.json: one benchmark, 30 rounds of step costs around ``factor`` (lognormal,
    ``spread`` round to round: 10% by default, the seed-FC step's on the wall clock; 3% on its thread clock)."""
    rng = random.Random(seed * 1000 + i)
    level = factor * math.exp(rng.gauss(0, drift))
    costs = [level * rng.lognormvariate(0, spread) for _ in range(30)]
    times = [0.2 * c for c in costs]
    row = {
        "name": BENCH.split("::")[-1],
        "fullname": BENCH,
        "group": "seed-000 FC training step",
        "device": "cpu",
        "device_name": "x86_64",
        "median_s": sorted(times)[15],
        "rounds_s": times,
        "samples_per_s": 250 / sorted(times)[15],
        "matmul_fraction": 0.5 / factor,
        "step_costs": costs,
        "step_cost": sorted(costs)[15],
        "cost_clock": "thread-cpu",
    }
    return {"environment": environment(i), "benchmarks": [row], "not_measured": []}


# --- the store ---------------------------------------------------------------------------------


def test_a_recorded_run_reads_back_with_its_claims_benchmarks_and_environment_in_date_order(tmp_path):
    history = tmp_path / "history"
    later = record_run(history, claims_report(3), bench_report(3), label="nightly")
    earlier = record_run(history, claims_report(1), None)
    runs = load(history).runs
    assert [r.path for r in runs] == [earlier, later]
    run = runs[1]
    assert (run.label, run.commit, run.torch_release, run.machine, run.modes) == (
        "nightly",
        "0003abcdef12",
        "2.14.1",
        "AMD EPYC",
        ["ieee"],
    )
    assert run.devices == {"cpu": "x86_64"}
    assert run.tiers == ["synthetic"]  # from the passed test's tier
    assert [c.id for c in run.claims] == ["S001-01", "S002-07"]  # typed: trainclaims.results.ClaimResult
    assert run.claims[1].tests[0].evidence["gap"] == 2e-8
    assert len(run.benchmarks[0].step_costs) == 30  # typed: trainclaims.benchgate.BenchRow
    assert runs[0].benchmarks is None  # a run without benchmarks.json is not a run of none


def test_an_older_run_file_reads_with_defaults_and_a_newer_ones_unknown_fields_are_ignored(tmp_path):
    history = tmp_path / "history"
    record_run(history, claims_report(0), None)
    old = {"schema": 1, "environment": environment(1), "claims": claims_report(1)["claims"], "benchmarks": None}
    (history / RUNS / "hand-written-v1.json").write_text(json.dumps(old))
    newer = {
        "format": "trainclaims-history-run",
        "schema": 7,
        "name": "from-the-future",
        "environment": environment(2),
        "claims": claims_report(2)["claims"],
        "benchmarks": bench_report(2)["benchmarks"],
        "hologram": {"what": "a field this version does not know"},
        "label": "v7",
    }
    (history / RUNS / "future.json").write_text(json.dumps(newer))
    marker = json.loads((history / MARKER).read_text())
    (history / MARKER).write_text(json.dumps({**marker, "schema": 9, "sharding": "a newer layout's extra"}))
    runs = load(history).runs
    assert [r.schema for r in runs] == [2, 1, 7]
    v1 = runs[1]
    assert (v1.name, v1.label, v1.tiers, v1.not_measured) == ("hand-written-v1", None, ["synthetic"], [])
    assert (runs[2].name, runs[2].label, runs[2].benchmarks[0].fullname) == ("from-the-future", "v7", BENCH)


def test_two_processes_and_eight_threads_recording_at_once_all_land_whole(tmp_path):
    """The history folder does not exist yet: the writers race to create it, then each adds runs."""
    history = tmp_path / "history"
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps(claims_report(0)))
    code = (  # five reports of each process (the same report twice would be refused: one run)
        "import json, sys; from trainclaims.history import record_run\n"
        "c = json.load(open(sys.argv[2]))\n"
        "for j in range(5):\n"
        "    c['environment']['command'] = f'{sys.argv[3]} {j}'\n"
        "    record_run(sys.argv[1], c, None, label=sys.argv[3])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(history), str(claims), f"process {k}"]) for k in range(2)
    ]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            barrier.wait()
            record_run(history, claims_report(k), bench_report(k), label=f"thread {k}")
        except BaseException as err:  # reported below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert not errors
    runs = load(history).runs
    labels = sorted(r.label for r in runs)
    assert labels == sorted([f"thread {k}" for k in range(8)] + [f"process {k}" for k in range(2)] * 5)
    assert all(r.claims and r.claims[1].id == "S002-07" for r in runs)
    assert sorted(p.name for p in history.iterdir()) == [RUNS, MARKER]  # no temporary file left behind
    assert not [p for p in (history / RUNS).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["a file", "a folder of something else", "a bad marker"])
def test_a_folder_that_is_not_a_history_is_a_one_line_error_and_nothing_is_written(tmp_path, capsys, kind):
    target = tmp_path / "target"
    if kind == "a file":
        target.write_text("notes\n")
    else:
        target.mkdir()
        (target / ("notes.txt" if kind != "a bad marker" else MARKER)).write_text("{not json")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert str(target) in check_folder(target)  # what the plugin checks before any test runs
    assert check_folder(tmp_path / "new") is None
    for call in (lambda: load(target), lambda: record_run(target, claims_report(0), None)):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value)
        assert str(target) in str(err.value)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "claims.json").write_text(json.dumps(claims_report(0)))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for argv in (["add", str(target), str(reports)], ["site", str(target), "--out", str(tmp_path / "site")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith("trainclaims-history: error: ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_bad_command_lines_and_reports_are_one_line_errors_with_exit_code_2(tmp_path, capsys):
    history = tmp_path / "history"
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "claims.json").write_text(json.dumps({"environment": {}, "benchmarks": []}))  # not a claims.json
    cases = [
        ([], "required"),
        (["comment", str(history), "--format", "html"], "invalid choice"),
        (["add", str(history), str(tmp_path / "nowhere")], "does not exist"),
        (["add", str(history), str(reports)], "not a trainclaims claims.json"),
    ]
    for argv, says in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert says in err
    assert not history.exists()
    (reports / "claims.json").write_text(json.dumps(claims_report(0)))
    assert main(["add", str(history), str(reports), "--label", "first"]) == 0
    capsys.readouterr()
    runs = list((history / RUNS).iterdir())
    for argv, says in [
        (["comment", str(history)], "no complete run before run 0"),
        (["comment", str(history), "--base", "nope"], "no run 'nope'"),
        (["add", str(history), str(reports)], "this report is already in history"),  # the same report, twice
        (["add", str(history), str(reports), "--label", "a\nb"], "--label 'a\\nb': give one line of text"),
        (["site", str(history), "--out", str(tmp_path / "s"), "--commit-url", "https://x/"], "with {commit}"),
        (["site", str(tmp_path / "empty"), "--out", str(tmp_path / "s")], "is empty: no run recorded yet"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert says in err
    assert list((history / RUNS).iterdir()) == runs  # nothing added


def test_a_corrupt_or_foreign_file_is_set_aside_with_a_warning_and_listed_by_runs(tmp_path, capsys):
    history = two_runs(tmp_path)
    good = sorted((history / RUNS).iterdir())
    text = good[1].read_text()
    (history / RUNS / "20261102T000000Z-truncated.json").write_text(text[: len(text) // 2])  # a run cut short
    (history / RUNS / "notes.json").write_text(json.dumps({"todo": "look at TP-09"}))  # someone's notes
    (history / RUNS / "README.txt").write_text("runs of the nightly job\n")
    bad = json.loads(text)
    bad["claims"][0]["verdict"] = "maybe"
    (history / RUNS / "20261103T000000Z-bad-verdict.json").write_text(json.dumps(bad))
    assert main(["runs", str(history)]) == 0
    out, err = capsys.readouterr()
    listed = out.splitlines()
    assert len(listed) == 6
    assert [line.split("\t")[1] for line in listed if line.startswith("-")] == sorted(
        ["20261102T000000Z-truncated.json", "notes.json", "README.txt", "20261103T000000Z-bad-verdict.json"]
    )
    assert "cannot be read (JSONDecodeError" in out
    assert "not a trainclaims history run (no schema number)" in out
    assert "verdict 'maybe' is not one of" in out
    assert err.count("warning:") == 4
    assert "notes.json set aside: not a trainclaims history run" in err
    assert main(["site", str(history), "--out", str(tmp_path / "site")]) == 0
    assert capsys.readouterr().err.count("warning:") == 4
    assert "truncated.json" in (tmp_path / "site" / "index.html").read_text()  # listed under Runs
    assert comment(capsys, str(history)).startswith("### ❌ trainclaims: 1 claim failing")


TWO_CLAIMS = """
import os
import pytest

@pytest.mark.claim("S000-01")
def test_accuracy_in_band(evidence):
    acc = float(os.environ.get("FAKE_ACCURACY", "0.85"))
    evidence.record(accuracy=acc)
    if os.environ.get("CTRL_C"):
        raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run
    assert 0.80 <= acc <= 0.90, f"accuracy {acc:.2f} left its band (0.8, 0.9)"

@pytest.mark.claim("S000-02")
def test_second_claim():
    pass
"""


@pytest.fixture
def suite(suite):
    """The suites' opted-in pytester project (suites/conftest.py) with two claims and a file."""
    suite.makepyfile(TWO_CLAIMS)
    (suite.path / "afile").write_text("a file, not a folder")
    return suite


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--history=afile/sub"], "ERROR: --history=afile/sub: cannot be made: */afile is a file"),
        (["--history=/proc/x"], "ERROR: --history=/proc/x: cannot be made or written to (*); give a writable folder"),
        (["--history="], "ERROR: --history=: no folder given; give one (a history folder, made on first use)"),
        (["--history=h", "--history-label=pr\n7"], "ERROR: --history-label='pr\\n7': give one line of text*"),
        (["--history=h", "--history-label="], "ERROR: --history-label='': give one line of text*"),
        (["--history-label=pr-7"], "ERROR: --history-label: no --history to label a run in; give --history=DIR"),
    ],
    ids=["under-a-file", "not-writable", "empty", "label-newline", "label-empty", "label-alone"],
)
def test_a_history_option_that_cannot_work_stops_the_run_before_any_test(suite, args, message):
    result = suite.runpytest_inprocess(*args, "--no-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.outlines[-5:]
    result.stdout.no_fnmatch_line("*passed*")  # no test ran: the run is not lost at the end
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors
    assert fnmatch(errors[0], message), errors[0]
    assert not (suite.path / "h").exists()
    assert not (suite.path / "afile").is_dir()


@pytest.mark.slow  # 7 s: pytest runs in subprocesses, one interrupted; CI runs it in the full run
def test_runs_recorded_by_pytest_an_interrupted_one_set_aside_and_a_second_broken_push_reads_red(
    suite, monkeypatch, capsys
):
    """main passes; a run of main is stopped by Ctrl-C (recorded, flagged interrupted); a pull
    request breaks S000-01 and is pushed twice. The comment on the second push, against the first
    (its default base), reads red and names the claim though no verdict changed; against label:main
    it takes the complete run of main, not the interrupted one."""
    history = suite.path / "hist"
    record = ["--history=hist", "--no-report", "-p", "no:cacheprovider"]
    assert suite.runpytest_inprocess(*record, "--history-label=main").ret == 0
    monkeypatch.setenv("CTRL_C", "1")  # in a process of its own: in this one it would stop this session too
    assert suite.runpytest_subprocess(*record, "--history-label=main").ret == pytest.ExitCode.INTERRUPTED
    monkeypatch.delenv("CTRL_C")
    monkeypatch.setenv("FAKE_ACCURACY", "0.50")
    for _ in range(2):
        result = suite.runpytest_inprocess(*record, "--history-label=pr-7")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["trainclaims: this run added to the history *hist*"])
    runs = load(history).runs
    assert [(r.label, r.status) for r in runs] == [
        ("main", "complete"),
        ("main", "interrupted"),
        ("pr-7", "complete"),
        ("pr-7", "complete"),
    ]
    assert runs[1].status_why == "interrupted (Ctrl-C or a signal)"
    text = comment(capsys, str(history))
    lines = text.splitlines()
    assert lines[0] == "### ❌ trainclaims: 1 claim failing"
    assert "(pr-7)" in lines[2].partition("against base")[2]  # the push before
    assert [line.split(";")[0] for line in lines if line.startswith("- ❌")] == [
        "- ❌ **S000-01** **fails** (base: fails)"
    ]
    assert "`AssertionError: accuracy 0.50 left its band (0.8, 0.9)" in text
    assert "pytest -p no:cacheprovider test_runs_recorded_by_pytest" in text  # the reproduce command
    against_main = comment(capsys, str(history), "--base", "label:main")
    assert f"base `{runs[0].commit[:10]}` (main)" in against_main
    assert "holds → **fails**" in against_main
    assert "the base run is interrupted" not in against_main


def test_the_history_package_imports_no_pytest_plugin_or_family_and_nothing_heavy_at_import():
    forbidden = ("pytest", "_pytest", "xdist", "trainclaims.fixtures", "trainclaims.families")
    heavy = ("matplotlib", "scipy", "numpy", "torch")
    folder = Path(__file__).parents[1] / "trainclaims" / "history"
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
                if node.col_offset == 0:  # a module-level import
                    assert not name.startswith(heavy), f"{path.name} imports {name} at import time"


def test_no_module_below_the_history_imports_it_and_benchmark_rows_are_read_through_benchgate():
    """The history is a tool on top of the core: the report writer, the gates and the rest of the
    core never import trainclaims.history (render.py once did, for the noise: that is benchgate's
    now); and outside trainclaims/benchgate.py no module of the core, the plugin or the history
    reads a benchmark row's gated numbers by their JSON keys (a row is a BenchRow past the edge)."""
    root = Path(__file__).parents[1]
    below = [p for p in (root / "trainclaims").rglob("*.py") if "history" not in p.parts and "families" not in p.parts]
    for path in below:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith("trainclaims.history")], f"{path.name} imports {names}"
    keys = ("step_costs", "gate_min_effect", "rounds_s", "cost_clock")  # what the gate compares
    readers = [*(root / "trainclaims").rglob("*.py"), *(root / "fixtures").glob("*.py")]
    for path in readers:
        if path.name in ("benchgate.py", "bench.py") or "families" in path.parts:
            continue  # benchgate: the row's one JSON form; bench: what writes it
        text = path.read_text()
        for key in keys:
            assert f'["{key}"]' not in text, f"{path.name} reads {key} from a dict"
            assert f'get("{key}")' not in text, f"{path.name} reads {key} from a dict"


# --- steps and noise ---------------------------------------------------------------------------


def series_with_step(rng: random.Random, n: int, at: int | None, size: float) -> list[float]:
    return [10 + rng.gauss(0, 1) + (size if at is not None and i >= at else 0) for i in range(n)]


def test_a_step_of_5_sigmas_is_found_at_the_run_where_it_began_with_its_levels():
    rng = random.Random(3)
    found_at = []
    for _ in range(50):
        fit = detect_steps(series_with_step(rng, 30, 12, 5.0))
        found_at += [s.index for s in fit.steps]
        assert len(fit.steps) >= 1  # measured: 100% at n=30 (steps.py)
    assert sum(abs(i - 12) <= 1 for i in found_at) >= 49  # measured: within one run in 99%
    step = detect_steps([10.0] * 8 + [12.5] * 8).steps[0]  # exact repeats: any change is a step
    assert (step.index, step.before, step.after) == (8, pytest.approx(10.0), pytest.approx(12.5))
    assert step.change == pytest.approx(0.25)


def test_a_benchmark_step_is_found_from_its_rounds_and_one_below_the_gate_limit_is_marked():
    def rows(factor_after: float) -> tuple[list[float], list[list[float]]]:
        reports = [bench_report(i, 1.0 if i < 10 else factor_after, seed=5) for i in range(20)]
        costs = [r["benchmarks"][0]["step_costs"] for r in reports]
        return [sorted(c)[15] for c in costs], costs

    values, rounds = rows(1.5)
    fit = detect_steps(values, rounds, gate_limit=0.25)
    assert [(s.index, s.below_gate) for s in fit.steps] == [(10, False)]
    assert fit.steps[0].change == pytest.approx(0.5, abs=0.05)
    values, rounds = rows(1.15)  # 15% slower: real, the rounds show it, but under the gate's 25%
    fit = detect_steps(values, rounds, gate_limit=0.25)
    assert [(s.index, s.below_gate) for s in fit.steps] == [(10, True)]


def test_unchanged_series_give_false_steps_no_more_often_than_measured():
    """steps.py measured 0.7% false alarms on Gaussian series of 30 runs and 2.1% on benchmark-like
    ones: 300 series each stay under 3% (9), a bound that real drift of the method would cross."""
    rng = random.Random(11)
    gaussian = sum(bool(detect_steps(series_with_step(rng, 30, None, 0)).steps) for _ in range(300))
    bench = 0
    for k in range(300):
        reports = [bench_report(i, seed=100 + k, drift=0.04) for i in range(30)]
        costs = [r["benchmarks"][0]["step_costs"] for r in reports]
        bench += bool(detect_steps([sorted(c)[15] for c in costs], costs).steps)
    assert gaussian <= 9
    assert bench <= 9


def test_one_outlying_run_is_set_aside_not_taken_for_two_steps():
    values = [1.0 + 0.01 * math.sin(i) for i in range(20)]
    values[9] = 3.0  # one busy run
    fit = detect_steps(values)
    assert fit.steps == []
    assert fit.outliers == [9]
    assert detect_steps([1.0, 2.0, 3.0]).note  # too few runs to tell: said, not guessed


def test_benchmark_noise_reports_the_cv_over_rounds_and_runs_and_the_gates_false_alarms():
    rows = [BenchRow.from_json(bench_report(i, seed=7, drift=0.04)["benchmarks"][0]) for i in range(12)]
    noise = history_noise(rows, simulations=400)
    assert noise.cv_rounds == pytest.approx(0.1, rel=0.3)  # drawn with 10% lognormal rounds
    assert noise.cv_runs == pytest.approx(0.04, abs=0.03)  # and 4% run-to-run drift
    assert noise.gate.limit == DEFAULT_LIMIT
    assert noise.false_alarm["slower"] <= 0.01  # 10% rounds, 30 of them: a 10% slowdown is 3 sigmas away
    assert set(noise.false_alarm_runs) == {"slower", "inconclusive"}
    assert noise.catches > 0.5  # a 10% slower step fails the gate more often than not, even this noisy
    steady = [BenchRow.from_json(bench_report(i, seed=8, spread=0.03)["benchmarks"][0]) for i in range(2)]
    assert history_noise(steady, simulations=400).catches >= 0.95  # 3% rounds: caught nearly always
    noisy = replace(rows[0], step_costs=[random.Random(k).lognormvariate(0, 0.9) for k in range(10)])
    noisy.gate_min_effect = 0.4
    assert benchmark_noise([noisy], simulations=400).false_alarm["inconclusive"] > 0.05  # an XOR-net-like spread


# --- the pull-request comment ------------------------------------------------------------------


def two_runs(tmp_path: Path) -> Path:
    history = tmp_path / "history"
    record_run(history, claims_report(0, gap=2e-8), bench_report(0, 1.0, spread=0.03), label="main")
    record_run(history, claims_report(1, gap=3e-3, verdict="fails"), bench_report(1, 1.5, spread=0.03), label="pr-42")
    return history


def comment(capsys, *argv: str) -> str:
    capsys.readouterr()  # what came before: not the comment
    assert main(["comment", *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_pr_comment_of_two_runs_shows_the_changed_claim_and_the_slower_benchmark_with_numbers(tmp_path, capsys):
    history = two_runs(tmp_path)
    site = "https://example.org/hist"
    text = comment(capsys, str(history), "--format", "pr-comment", "--site-url", site)
    print(text)
    lines = text.splitlines()
    assert lines[0] == "### ❌ trainclaims: 1 claim failing, 1 benchmark slower"
    assert len(lines[0]) < 80
    assert lines[2].startswith("Head `0001abcdef` (pr-42), torch 2.14.1")
    assert "against base `0000abcdef` (main)" in lines[2]
    assert f"[site]({site}/index.html)" in lines[2]
    assert "**Claims**: 1 failing, 1 changed, 2 verdicts compared, 0 measured in one run only" in text
    claim = [line for line in lines if line.startswith("- ❌")]
    assert claim == [
        f"- ❌ [**S002-07**]({site}/claims/S002-07.html) holds → **fails**; 1/1 tests failed; "
        "gap 0.003 (needs <= 0.0001); `AssertionError: gap 0.003 (needs <= 0.0001): does not hold`"
    ]
    bench = next(line for line in lines if line.startswith("- 🐢"))
    assert f"[`{BENCH.split('::')[-1]}` [cpu]]({site}/benchmarks/" in bench
    assert "**slower** +5" in bench
    assert "step cost (limit +10%)" in bench
    assert text.count("<details>") == 2
    assert text.count("</details>") == 2
    test_line = next(line for line in lines if line.startswith(f"  - `{GAP_TEST}`"))
    assert "passed → failed; gap 0.003 (needs <= 0.0001) (base gap 2e-08 (needs <= 0.0001))" in test_line
    assert "slower (past the limit): step cost 1.48" in text
    assert "GEMM units against the baseline's 0.981 (lower quartiles; +51.2%" in text
    commands = [line for line in lines if line.startswith("pytest ")]
    assert commands == [
        "pytest -p no:cacheprovider --device=cpu -p no:xdist "
        "suites/test_s002_batchnorm.py::test_accumulation_equals_the_larger_batch_in_each_numerics_mode "
        "suites/test_bench_throughput.py::test_seed_fc_training_step_throughput"
    ]


def test_a_comment_between_unchanged_runs_says_so_and_a_claim_one_run_skipped_is_no_change(tmp_path, capsys):
    history = tmp_path / "history"
    for i in range(3):
        claims = claims_report(i)
        if i == 2:  # a run without the device or data S002-07 needs: skipped, not changed
            claims["claims"][1] |= {"verdict": "not measured", "modes": {"ieee": {"verdict": "not measured"}}}
            claims["claims"][1]["tests"][0] |= {"outcome": "skipped", "reason": "no GPU", "evidence": {}}
        record_run(history, claims, bench_report(i, seed=9, spread=0.03))
    text = comment(capsys, str(history), "--base", "0000", "--head", "2")  # a commit, an index
    assert text.startswith("### ✅ trainclaims: 1 claim verdict, 1 benchmark as in the base\n")
    assert "**Claims**: 0 failing, 0 changed, 1 verdicts compared, 1 measured in one run only" in text
    assert "0 slower, 0 inconclusive, 0 faster, 1 unchanged" in text
    assert "Reproduce" not in text


def test_a_second_push_of_a_broken_pr_reads_red_naming_the_failing_claim(tmp_path, capsys):
    """main holds; the first push breaks S002-07; the second push (another commit, the same break)
    against the first: no verdict changed, and still the comment is red and names the claim."""
    history = tmp_path / "history"
    record_run(history, claims_report(0), bench_report(0, spread=0.03), label="main")
    for i in (1, 2):
        broken = claims_report(i, gap=3e-3 + i * 1e-4, verdict="fails")
        broken["claims"][1]["tests"] += [
            {**broken["claims"][1]["tests"][0], "test": GAP_TEST.replace("ieee", f"seed{k}")} for k in range(7)
        ]
        record_run(history, broken, bench_report(i, seed=i, spread=0.03), label="pr-42")
    text = comment(capsys, str(history))  # the base: the push before, by default
    lines = text.splitlines()
    assert lines[0] == "### ❌ trainclaims: 1 claim failing"
    assert "against base `0001abcdef` (pr-42)" in lines[2]
    failing = [line for line in lines if line.startswith("- ❌")]
    assert len(failing) == 1
    assert failing[0].startswith("- ❌ **S002-07** **fails** (base: fails); 8/8 tests failed; gap 0.0032 (needs")
    assert failing[0].endswith("does not hold` ×8")  # the same message once, with its count
    assert text.count("AssertionError") == 2  # once on its line, once in the details
    main_text = comment(capsys, str(history), "--base", "label:main")
    assert main_text.splitlines()[0] == "### ❌ trainclaims: 1 claim failing"
    assert "- ❌ **S002-07** holds → **fails**; 8/8 tests failed" in main_text
    assert comment(capsys, str(history), "--base", "main") == main_text  # a bare label where nothing else matches


def test_an_interrupted_or_empty_run_is_never_a_default_base_and_nothing_compared_is_never_green(tmp_path, capsys):
    history = tmp_path / "history"
    record_run(history, claims_report(0), bench_report(0, spread=0.03), label="main")
    stopped = claims_report(1)
    for claim in stopped["claims"]:  # Ctrl-C before the tests: "not run", no benchmark
        claim |= {"verdict": "not measured", "modes": {}}
        claim["tests"][0] |= {"outcome": "not run", "reason": "the session stopped before it", "evidence": {}}
    record_run(history, stopped, None, label="main")
    record_run(history, claims_report(2), bench_report(2, spread=0.03), label="pr")
    runs = load(history).runs
    assert [r.status for r in runs] == ["complete", "interrupted", "complete"]
    assert "stopped before 2 of its 2 tests" in runs[1].status_why
    text = comment(capsys, str(history))
    assert "against base `0000abcdef` (main)" in text.splitlines()[2]  # not the interrupted run 1
    assert text.startswith("### ✅")
    assert comment(capsys, str(history), "--base", "label:main") == text  # the newest *complete* main
    forced = comment(capsys, str(history), "--base", "1")  # asked for by index: compared, and flagged
    assert forced.splitlines()[0] == "### ⚠️ trainclaims: nothing compared (see below)"
    assert "⚠️ nothing could be compared" in forced
    assert "⚠️ the base run is interrupted: the session stopped before 2 of its 2 tests" in forced
    other = tmp_path / "other"
    record_run(other, {**claims_report(0), "claims": claims_report(0)["claims"][:1]}, None)
    record_run(other, {**claims_report(1), "claims": claims_report(1)["claims"][1:]}, None)  # no claim in common
    assert comment(capsys, str(other)).startswith("### ⚠️ trainclaims: nothing compared")
    empty = claims_report(3)
    for claim in empty["claims"]:
        claim |= {"verdict": "not measured", "modes": {}}
        claim["tests"][0] |= {"outcome": "skipped", "reason": "no data", "evidence": {}}
    record_run(other, empty, None)
    assert load(other).runs[-1].status == "empty"
    assert main(["comment", str(other), "--base", "label:x"]) == 2
    assert "no run labelled 'x'" in capsys.readouterr().err


def test_runs_are_chosen_by_label_commit_name_or_index_and_a_date_is_not_an_index(tmp_path, capsys):
    history = tmp_path / "history"
    for i in range(3):
        record_run(history, claims_report(i), None, label="main" if i < 2 else "pr")
    h = load(history)
    assert [h.find(ref) for ref in ("label:main", "main", "pr", "0001", "-1", "0", h.runs[1].name[:30])] == [
        1, 1, 2, 1, 2, 0, 1
    ]  # fmt: skip
    for ref, says in [
        ("2026", "run '2026' names 3 runs: give more of the name"),
        ("7", "no run '7' in history"),
        ("label:nightly", "no run labelled 'nightly'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            h.find(ref)


def test_the_gate_and_the_comment_make_the_same_call_on_the_same_pair_of_runs(tmp_path, capsys):
    """One judge: CI's gate (--claims-baseline, --bench-baseline) and the comment, fed the same two
    runs, agree on every benchmark's call and on the claims that changed."""
    from trainclaims.gating import gate_benchmarks, gate_claims
    from trainclaims.history.comment import changes

    rng = random.Random(5)
    for case in range(12):
        history = tmp_path / f"h{case}"
        factor = rng.choice([1.0, 1.05, 1.1, 1.3, 1.6])
        spread = rng.choice([0.03, 0.1, 0.4])
        base_bench = bench_report(0, 1.0, seed=case, spread=spread)
        head_bench = bench_report(1, factor, seed=case, spread=spread)
        if case % 3 == 0:  # rows from before step costs: round times, both places
            for report in (base_bench, head_bench):
                del report["benchmarks"][0]["step_costs"]
        if case % 4 == 1:
            head_bench["benchmarks"][0]["gate_min_effect"] = 0.3  # a row's own limit, both places
        verdict = rng.choice(["holds", "fails"])
        record_run(history, claims_report(0), base_bench)
        record_run(history, claims_report(1, gap=3e-3, verdict=verdict), head_bench)
        base, head = load(history).runs
        gate = gate_benchmarks(base.benchmarks, head.benchmarks)
        found = changes(base, head)
        assert [c.status for c in gate.comparisons] == [b.status for b in found.benches]
        assert gate.changed == found.count("slower")
        assert gate.inconclusive == found.count("inconclusive")
        claims_gate = gate_claims(base.claims, head.claims)
        assert claims_gate.changed == sum(len(c.changed) for c in found.changed)
        text = comment(capsys, str(history))
        assert text.startswith("### ❌") == bool(claims_gate.lines or gate.lines or head.failing)


# --- the site, in a real browser ---------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SEEDS_TEST = "suites/test_tp_practice.py::test_adam_with_weight_decay_is_not_adamw"
BN_BENCH = "suites/test_bench_throughput.py::test_bn_net_step_with_and_without_gradient_accumulation[cpu-large-batch]"


def site_history(folder: Path, n: int) -> Path:
    """``n`` runs as a team's history has them: labels (main, and pull requests), two torch releases,
    an interrupted run, a claim whose tests take no device (S001-01), one run once per seed (TP-09,
    5 seeds), one no run measured (S000-03), S002-07 failing for two runs near the end, the seed-FC
    step 1.6x costlier from two thirds of the way on, the BN step steady; samples/s swinging with
    the machine's load."""
    rng = random.Random(n)
    for i in range(n):
        torch = "2.14.1+cpu" if i < n // 2 else "2.15.0+cpu"
        broken = i in (n - 4, n - 3)
        claims = claims_report(
            i, gap=3e-3 if broken else 2e-8 * (1 + rng.random()), verdict="fails" if broken else "holds", torch=torch
        )
        when = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(hours=20 * i)  # a run every 20 hours
        claims["environment"]["date"] = when.isoformat()
        claims["claims"][0]["tests"][0]["device"] = None  # S001-01: a test that takes no device
        seeds = [
            {
                "test": f"{SEEDS_TEST}[{k}]",
                "claims": ["TP-09"],
                "outcome": "passed",
                "numerics": "ieee",
                "evidence": {"adam_l2_vs_adamw_gap": 0.05 * (1 + 0.1 * rng.random()) + 0.01 * k},
            }
            for k in range(5)
        ]
        claims["claims"].append(
            {"id": "TP-09", "family": "TP", "statement": "Adam's weight decay is not AdamW's.", "verdict": "holds",
             "modes": {"ieee": {"verdict": "holds", "why": ""}}, "tests": seeds}
        )  # fmt: skip
        claims["claims"].append(
            {"id": "S000-03", "family": "S000", "statement": "A claim no run measured.", "verdict": "not measured",
             "why": "no test yet", "modes": {}, "tests": []}
        )  # fmt: skip
        label = "main" if i % 3 else f"pr-{100 + i}"
        if i == n // 3:  # Ctrl-C in the middle of the run: its tests never ran
            for claim in claims["claims"]:
                claim["verdict"], claim["modes"] = "not measured", {}
                for test in claim["tests"]:
                    test |= {"outcome": "not run", "reason": "the session stopped before it", "evidence": {}}
            record_run(folder, claims, None, label=label)
            continue
        benches = bench_report(i, 1.6 if i >= 2 * n // 3 else 1.0, seed=3, drift=0.01, spread=0.04)
        fc = benches["benchmarks"][0]
        load = rng.choice([1.0, 1.0, 0.5, 0.3])  # samples/s follow the machine's load
        fc["samples_per_s"] *= load
        bn = {**fc, "fullname": BN_BENCH, "name": BN_BENCH.split("::")[-1], "group": "BN net"}
        bn["step_costs"] = [0.9 * c / (1.6 if i >= 2 * n // 3 else 1.0) for c in fc["step_costs"]]
        bn["step_cost"] = sorted(bn["step_costs"])[15]
        benches["benchmarks"].append(bn)
        benches["environment"] = claims["environment"]
        record_run(folder, claims, benches, label=label)
    return folder


class Dom(HTMLParser):
    """Each element of a page with its attributes and its own text (enough to read tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self.open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element: dict[str, Any] = {"tag": tag, "attrs": dict(attrs), "text": "", "inside": []}
        for outer in self.open:
            outer["inside"].append(element)
        self.elements.append(element)
        if tag not in ("br", "meta", "input"):
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if not any(e["tag"] == tag for e in self.open):
            return  # the end of an element that was never left open (a <circle>...</circle>)
        while self.open and self.open.pop()["tag"] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element["text"] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag and all(e["attrs"].get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]


def browse(url: str, profile: Path, *extra: str) -> str:
    """What chromium shows at ``url`` (JavaScript run): its DOM, or with extra flags its output."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *(extra or ("--dump-dom",)),
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot_folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where the site's screenshots are kept: ``<--report-dir>/history-site/`` (what runs write),
    else (``--no-report``) the test's temporary folder."""
    config = request.config
    if config.getoption("--no-report"):
        return tmp_path
    folder = Path(config.invocation_params.dir) / config.getoption("--report-dir") / "history-site"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in elements if "hidden" not in e["attrs"]]


def spans(texts: list[dict[str, Any]], width: float) -> list[tuple[float, float]]:
    """The horizontal extent of SVG texts (x, anchor, ~``width`` pixels a character)."""
    out = []
    for t in texts:
        x, w = float(t["attrs"]["x"]), width * len(t["text"])
        anchor = t["attrs"].get("text-anchor", "start")
        left = x - w / 2 if anchor == "middle" else x - w if anchor == "end" else x
        out.append((left, left + w))
    return out


COMMIT_URL = "https://example.org/repo/commit/{commit}"


@pytest.mark.slow  # 4-6 s each: a site drawn in Chromium; CI runs it in the full run
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium")
@pytest.mark.parametrize("n", [9, 200])
def test_the_site_reads_at_a_glance_in_a_headless_browser(tmp_path, request, n):
    """A history of ``n`` runs (:func:`site_history`) as Chromium shows it, screenshots kept: the
    overview (benchmark sparklines with their last change, claims x runs newest first with labels in
    the headers, the newest 30 runs shown, the never-measured claim behind a toggle, the device filter
    keeping a claim whose tests take no device, the steps found) and the seed-FC benchmark's page
    (an axis of dates and labels whose labels do not overlap, round ticks from zero, a tooltip and a
    commit link per point, the step marked, samples/s marked as machine-dependent), a claim's seeds
    folded into one chart."""
    history = site_history(tmp_path / "history", n)
    out = tmp_path / "site"
    assert main(["site", str(history), "--out", str(out), "--commit-url", COMMIT_URL]) == 0
    for page in out.rglob("*.html"):  # nothing to fetch: no http(s) source, stylesheet or script file
        text = page.read_text()
        assert not [m for m in ("src=", "<link", "@import", "url(") if m in text], page
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text.replace("https://example.org/repo/commit/", "")
    runs = load(history).runs
    shown = min(n, 30)
    index = (out / "index.html").as_uri()
    dom = Dom()
    dom.feed(browse(index, tmp_path / "p1"))
    assert dom.find("span", id="shown")[0]["text"] == (
        f"Showing {shown} of {n} runs and 3 claim rows (4 claims; 1 never measured, hidden)."
    )  # the script ran
    heads = visible([e for e in dom.find("th") if "run" in e["attrs"].get("class", "")])
    heads = [e for e in heads if e in dom.find("table", id="verdicts")[0]["inside"]]
    assert [int(e["attrs"]["data-run"]) for e in heads] == list(range(n - 1, n - 1 - shown, -1))  # newest first
    assert heads[0]["text"].startswith(runs[-1].label)  # its label in the column's header
    rows = {e["attrs"]["data-claim"]: e for e in dom.find("tr", data_row_mode="*", data_row_device="*")}
    assert sorted(rows) == ["S000-03", "S001-01", "S002-07", "TP-09"]
    assert "hidden" in rows["S000-03"]["attrs"]  # never measured: behind the toggle
    cells = visible([e for e in rows["S002-07"]["inside"] if e["tag"] == "td"])
    assert [e["text"] for e in cells[:5]] == ["holds", "holds", "fails", "fails", "holds"]
    assert ["changed" in e["attrs"]["class"] for e in cells[:5]] == [False, True, False, True, False]
    bench_rows = dom.find("tr", data_bench_device="cpu")
    assert len(bench_rows) == 2
    for row in bench_rows:
        assert any(e["tag"] == "polyline" for e in row["inside"])  # the sparkline, drawn
        assert "since run" in row["text"]  # the last change
    assert "machine-dependent" in dom.find("th", class_="machine-dependent")[0]["text"]
    bench_steps = [e for e in dom.find("tr", data_step="1") if "step cost" in e["text"]]
    assert [e["attrs"]["data-run"] for e in bench_steps][-1:] == [str(2 * n // 3)]
    assert "regression" in bench_steps[-1]["text"]

    filtered = Dom()
    filtered.feed(browse(index + "#device=cpu&never=1&runs=all", tmp_path / "p2"))
    rows = {e["attrs"]["data-claim"]: e for e in visible(filtered.find("tr", data_row_mode="*"))}
    assert "S001-01" in rows  # its tests take no device: the device filter keeps it
    assert "S000-03" in rows  # asked for
    assert filtered.find("span", id="shown")[0]["text"].startswith(f"Showing {n} of {n} runs")

    bench_page = next((out / "benchmarks").glob("test-seed-fc*.html"))
    page = Dom()
    page.feed(browse(bench_page.as_uri(), tmp_path / "p3"))
    chart = page.find("svg", class_="chart")[0]["inside"]  # the step cost's chart, first on the page
    assert [e["attrs"]["data-run"] for e in chart if e["attrs"].get("class") == "step"] == [str(2 * n // 3)]
    xticks = [e for e in chart if e["attrs"].get("class") == "xtick"]
    assert len(xticks) >= 3
    assert xticks[-1]["attrs"]["data-run"] == str(n - 1)  # the newest run is named
    assert xticks[-1]["text"] == runs[-1].date[:10]
    extents = spans(xticks, 6)
    assert all(b[0] - a[1] >= 0 for a, b in itertools.pairwise(extents)), extents  # no label overlaps
    assert all(0 <= left and right <= 640 for left, right in extents)  # and none is cut
    yticks = [float(e["text"]) for e in chart if e["attrs"].get("class") == "ytick"]
    assert yticks[0] == 0  # a cost is not negative: the axis starts at zero
    step = yticks[1] - yticks[0]
    assert f"{step:.1e}"[:3] in ("1.0", "2.0", "2.5", "5.0")  # round ticks
    assert all(abs(t / step - round(t / step)) < 1e-6 for t in yticks)
    newest = next(e for e in chart if e["tag"] == "circle" and e["attrs"].get("data-run") == str(n - 1))
    tip = newest["text"]
    assert runs[-1].commit[:10] in tip
    assert runs[-1].date[:10] in tip
    assert runs[-1].label in tip  # the tooltip: commit, date, label
    links = [e["attrs"]["href"] for e in chart if e["tag"] == "a"]
    assert COMMIT_URL.format(commit=runs[-1].commit) in links
    titles = [e for e in page.find("h2") if "samples/s" in e["text"]]
    assert titles[0]["attrs"].get("class") == "machine-dependent"
    assert "machine-dependent" in titles[0]["text"]

    claim = Dom()
    claim.feed(browse((out / "claims" / "TP-09.html").as_uri(), tmp_path / "p4"))
    groups = [e["text"] for e in claim.find("h3")]
    assert groups == [f"{SEEDS_TEST}[*] (one point per run: the median over its seeds, the bar their range)"]
    assert len(claim.find("svg", class_="chart")) == 1  # 5 seeds, one chart
    assert len(visible(claim.find("tr", data_claim="TP-09"))) == 2  # its page shows its every row: *, ieee

    folder = screenshot_folder(request, tmp_path)
    for name, url in (("overview", index), ("benchmark", bench_page.as_uri())):
        shot = folder / f"site-{n}-runs-{name}.png"
        browse(url, tmp_path / f"s-{name}", f"--screenshot={shot}", "--window-size=1400,1100")
        assert shot.read_bytes()[:4] == b"\x89PNG"
        print(f"screenshot of the {name} at {n} runs: {shot}")


def test_the_site_refuses_a_folder_of_other_files_and_replaces_an_earlier_site_whole(tmp_path, capsys):
    history = two_runs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["site", str(history), "--out", str(other)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    out = tmp_path / "site"
    assert main(["site", str(history), "--out", str(out)]) == 0
    (out / "stale.html").write_text("from before")
    assert main(["site", str(history), "--out", str(out)]) == 0
    assert not (out / "stale.html").exists()
    assert (out / "index.html").exists()
    assert (out / "claims" / "S002-07.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
