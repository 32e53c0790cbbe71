"""Self-tests of the run history (trainclaims/history): the store across schema versions and with
two writers at once, a folder that is not a history, the step detection on series with known
steps and on unchanged ones, each benchmark's noise at the gate, the pull-request comment of two
runs, and the static site as a real headless browser renders it (Debian's chromium)."""

from __future__ import annotations

import ast
import json
import math
import random
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from trainclaims.history import check_folder, detect_steps, load, record_run
from trainclaims.history.__main__ import main
from trainclaims.history.noise import Gate, benchmark_noise, judge
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


def bench_report(i: int, factor: float = 1.0, seed: int = 0, drift: float = 0.0) -> dict[str, Any]:
    """A small benchmarks.json: one benchmark, 30 rounds of step costs around ``factor``."""
    rng = random.Random(seed * 1000 + i)
    level = factor * math.exp(rng.gauss(0, drift))
    costs = [level * rng.lognormvariate(0, 0.1) for _ in range(30)]  # 10% round-to-round spread
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
    assert [c["id"] for c in run.claims] == ["S001-01", "S002-07"]
    assert run.claims[1]["tests"][0]["evidence"]["gap"] == 2e-8
    assert len(run.benchmarks[0]["step_costs"]) == 30
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
    assert (runs[2].name, runs[2].label, runs[2].benchmarks[0]["fullname"]) == ("from-the-future", "v7", BENCH)


def test_two_processes_and_eight_threads_recording_at_once_all_land_whole(tmp_path):
    """The history folder does not exist yet: the writers race to create it, then each adds runs."""
    history = tmp_path / "history"
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps(claims_report(0)))
    code = (
        "import json, sys; from trainclaims.history import record_run\n"
        "c = json.load(open(sys.argv[2]))\n"
        "for _ in range(5): record_run(sys.argv[1], c, None, label=sys.argv[3])\n"
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
    assert all(r.claims and r.claims[1]["id"] == "S002-07" for r in runs)
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
    for argv, says in [
        (["comment", str(history)], "first of the history"),
        (["comment", str(history), "--base", "nope"], "no run 'nope'"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert says in err


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


def test_the_noise_simulation_applies_the_gates_own_rule():
    from trainclaims.gating import DEFAULT_GATE, _judge

    rng = random.Random(2)
    for _ in range(40):
        factor = rng.choice([1.0, 1.1, 1.3, 1.6])
        before = [rng.lognormvariate(0, 0.2) for _ in range(rng.choice([10, 30]))]
        after = [factor * rng.lognormvariate(0, 0.2) for _ in range(rng.choice([10, 30]))]
        theirs = _judge(
            {"samples_per_s": 1, "step_costs": before}, {"samples_per_s": 1, "step_costs": after}, DEFAULT_GATE
        )
        assert judge(before, after, Gate.of({}))[0] == theirs[0]


def test_benchmark_noise_reports_the_cv_over_rounds_and_runs_and_the_gates_false_alarms():
    rows = [bench_report(i, seed=7, drift=0.04)["benchmarks"][0] for i in range(12)]
    noise = benchmark_noise(rows, simulations=400)
    assert noise.cv_rounds == pytest.approx(0.1, rel=0.3)  # drawn with 10% lognormal rounds
    assert noise.cv_runs == pytest.approx(0.04, abs=0.03)  # and 4% run-to-run drift
    assert noise.gate.min_effect == 0.25
    assert noise.false_alarm["changed"] <= 0.01  # 10% rounds, 30 of them: a 25% slowdown is far
    assert set(noise.false_alarm_runs) == {"changed", "inconclusive"}
    noisy = [{**rows[0], "step_costs": [random.Random(k).lognormvariate(0, 0.9) for k in range(10)]}]
    noisy[0]["gate_min_effect"] = 0.4
    assert benchmark_noise(noisy, simulations=400).false_alarm["inconclusive"] > 0.05  # an XOR-net-like spread


# --- the pull-request comment ------------------------------------------------------------------


def two_runs(tmp_path: Path) -> Path:
    history = tmp_path / "history"
    record_run(history, claims_report(0, gap=2e-8), bench_report(0, 1.0), label="main")
    record_run(history, claims_report(1, gap=3e-3, verdict="fails"), bench_report(1, 1.5), label="pr-42")
    return history


def test_the_pr_comment_of_two_runs_shows_the_changed_claim_and_the_slower_benchmark_with_numbers(tmp_path, capsys):
    history = two_runs(tmp_path)
    assert main(["comment", str(history), "--format", "pr-comment"]) == 0
    text = capsys.readouterr().out
    print(text)
    lines = text.splitlines()
    assert lines[0].startswith("### ❌ trainclaims: 1 claim changed its verdict, 1 benchmark slower")
    assert "(pr-42)" in lines[0]
    assert "(main)" in lines[0]
    assert (
        "**Claims**: 1 changed, 1 unchanged, 0 not measured in one of the runs, 0 new, 0 gone · **Benchmarks**: "
        "1 slower, 0 faster, 0 unchanged, 0 inconclusive, 0 new, 0 gone" in text
    )
    assert "| claim S002-07 | holds | **fails** | verdict changed |" in text
    assert "| claim S002-07 [ieee]" not in text  # its one mode changed as it did: said once
    row = next(line for line in lines if line.startswith("| benchmark `test_seed_fc"))
    assert "**+5" in row
    assert "slower**" in row
    assert "(limit ±25%)" in row
    claim = next(line for line in lines if line.startswith(f"  - `{GAP_TEST}`"))
    assert "passed → failed; gap 0.003 (needs <= 0.0001), base 2e-08" in claim
    assert "AssertionError: gap 0.003" in claim
    assert "step cost 1.5" in text
    assert "GEMM units against 1" in text
    commands = [line for line in lines if line.startswith("pytest ")]
    assert commands == [
        "pytest -p no:cacheprovider -p no:xdist "
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
        record_run(history, claims, bench_report(i, seed=9))
    assert main(["comment", str(history), "--base", "0000", "--head", "2"]) == 0  # a commit, an index
    text = capsys.readouterr().out
    assert text.startswith("### ✅ trainclaims: no claim changed its verdict, no benchmark slower")
    assert "**Claims**: 0 changed, 1 unchanged, 1 not measured in one of the runs, 0 new, 0 gone" in text
    assert "0 slower, 0 faster, 1 unchanged" in text
    assert "Reproduce" not in text


# --- the site, in a real browser ---------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
        if tag not in ("br", "meta", "line", "circle", "polyline", "input", "option"):
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium")
def test_the_site_shows_verdicts_steps_and_filters_in_a_headless_browser(tmp_path):
    """Eight runs: the benchmark's step cost 1.6x from run 5 on (torch 2.15), S002-07 failing from
    run 6 on. The overview shows the verdict grid, the step at run 5 in its regressions list, the
    filters (JavaScript) hide the other release's runs; the benchmark page marks the step at run 5."""
    history = tmp_path / "history"
    for i in range(8):
        torch = "2.14.1+cpu" if i < 5 else "2.15.0+cpu"
        verdict = "fails" if i >= 6 else "holds"
        claims = claims_report(i, gap=3e-3 if i >= 6 else 2e-8, verdict=verdict, torch=torch)
        benches = bench_report(i, 1.6 if i >= 5 else 1.0, seed=4)
        benches["environment"]["torch"] = torch
        record_run(history, claims, benches)
    out = tmp_path / "site"
    assert main(["site", str(history), "--out", str(out)]) == 0
    pages = list(out.rglob("*.html"))
    for page in pages:  # nothing to fetch: no http(s) source, stylesheet or script file
        text = page.read_text()
        assert not [m for m in ("src=", "<link", "@import", "url(") if m in text], page
        assert "https://" not in text
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    profile = tmp_path / "chromium-profile"
    index = (out / "index.html").as_uri()

    dom = Dom()
    dom.feed(browse(index, profile))
    shown = dom.find("span", id="shown")[0]["text"]
    assert shown == "Showing 8 of 8 runs and 2 claim rows (2 claims)."  # the script ran
    rows = {e["attrs"]["data-claim"]: e for e in dom.find("tr", data_row_mode="*", data_row_device="*")}
    assert sorted(rows) == ["S001-01", "S002-07"]
    cells = [e for e in rows["S002-07"]["inside"] if e["tag"] == "td"]
    assert [e["attrs"]["data-run"] for e in cells] == [str(i) for i in range(8)]
    assert [e["text"] for e in cells] == ["holds"] * 6 + ["fails"] * 2
    assert "changed" in cells[6]["attrs"]["class"]
    assert "changed" not in cells[7]["attrs"]["class"]
    assert {e["text"] for e in rows["S001-01"]["inside"] if e["tag"] == "td"} == {"holds"}
    steps = dom.find("tr", data_step="1")
    bench_steps = [e for e in steps if "step cost" in e["text"]]
    assert [e["attrs"]["data-run"] for e in bench_steps] == ["5"]
    assert "run 5 (0005abcdef torch 2.15.0)" in bench_steps[0]["text"]
    assert "regression" in bench_steps[0]["text"]
    assert "+6" in bench_steps[0]["text"]
    changes = [[td["text"] for td in e["inside"] if td["tag"] == "td"] for e in dom.find("tr", class_="verdict-change")]
    assert changes == [["run 6 (0006abcdef torch 2.15.0)", "S002-07", "holds", "fails"]]

    filtered = Dom()
    filtered.feed(browse(index + "#torch=2.15.0", tmp_path / "chromium-profile-2"))
    heads = [e for e in filtered.find("th") if "data-run" in e["attrs"]]
    assert [e["attrs"]["data-run"] for e in heads if "hidden" not in e["attrs"]] == ["5", "6", "7"]
    assert filtered.find("span", id="shown")[0]["text"].startswith("Showing 3 of 8 runs")

    bench_page = next((out / "benchmarks").glob("*.html")).as_uri()
    page = Dom()
    page.feed(browse(bench_page, tmp_path / "chromium-profile-3"))
    marks = [e["attrs"]["data-run"] for e in page.find("line") if e["attrs"].get("class") == "step"]
    assert marks[:1] == ["5"]  # the step cost's chart, first on the page
    assert [e["attrs"]["data-run"] for e in page.find("li") if e["attrs"].get("class") == "step-found"][:1] == ["5"]

    shot = tmp_path / "overview.png"
    browse(index, tmp_path / "chromium-profile-4", f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.read_bytes()[:4] == b"\x89PNG"
    print(f"screenshot of the overview: {shot}")


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
