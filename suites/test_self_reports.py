"""Self-tests of the reports and the CI gates: run small suites with pytester, then rerun them
against the saved reports unchanged (the gate passes) and with an injected regression (it fails)."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torchvision  # noqa: F401  imported before any in-process run (pytester unloads what a run imports)

ROOT = Path(__file__).resolve().parents[1]

CLAIM_WITH_A_BAND = """
import os
import pytest

BAND = (0.80, 0.90)  # the claim's measured band

@pytest.mark.claim("S000-01")
def test_accuracy_in_band(evidence):
    acc = float(os.environ.get("FAKE_ACCURACY", "0.85"))
    evidence.record(accuracy=acc)
    assert BAND[0] <= acc <= BAND[1]
"""

BENCHMARK = """
import os
import time
import pytest
from trainclaims.bench import record

@pytest.mark.benchmark
def test_step(benchmark):
    benchmark.pedantic(time.sleep, args=(float(os.environ.get("FAKE_STEP_S", "0.01")),), rounds=20, iterations=1)
    record(benchmark, "cpu", samples=250, flops=1000)
"""


def keep_baseline(suite, name: str) -> Path:
    baseline = suite.path / f"baseline-{name}"
    shutil.copy(suite.path / "reports" / name, baseline)
    return baseline


def test_the_claims_gate_passes_an_unchanged_rerun_and_fails_a_number_out_of_its_band(suite, monkeypatch):
    suite.makepyfile(CLAIM_WITH_A_BAND)
    assert suite.runpytest_inprocess("--device=cpu").ret == 0
    baseline = keep_baseline(suite, "claims.json")

    rerun = suite.runpytest_inprocess("--device=cpu", "--no-report", f"--claims-baseline={baseline}")
    assert rerun.ret == 0
    rerun.stdout.no_fnmatch_line("*GATE*")

    monkeypatch.setenv("FAKE_ACCURACY", "0.50")
    moved = suite.runpytest_inprocess("--device=cpu", "--no-report", f"--claims-baseline={baseline}")
    assert moved.ret == pytest.ExitCode.TESTS_FAILED
    moved.stdout.fnmatch_lines(["*trainclaims gate failed*", "GATE: S000-01: verdict changed from 'holds' to 'fails'*"])


def test_the_benchmark_gate_passes_an_unchanged_rerun_and_fails_a_slowed_benchmark(suite, monkeypatch):
    suite.makepyfile(BENCHMARK)
    assert suite.runpytest_inprocess("--device=cpu").ret == 0
    baseline = keep_baseline(suite, "benchmarks.json")
    assert json.loads(baseline.read_text())["benchmarks"][0]["samples_per_s"] > 0

    rerun = suite.runpytest_inprocess("--device=cpu", "--no-report", f"--bench-baseline={baseline}")
    assert rerun.ret == 0

    monkeypatch.setenv("FAKE_STEP_S", "0.03")  # three times slower
    slowed = suite.runpytest_inprocess("--device=cpu", "--no-report", f"--bench-baseline={baseline}")
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED
    slowed.stdout.fnmatch_lines(  # a row without step costs: its round times, at the 25% limit of theirs
        [
            "GATE: *test_step* [[]cpu[]]: slower (past the limit): * samples/s against the baseline's * (-*%) "
            "(lower-quartile test: slower p=*, under +17.5% p=*, limit 25%; "
            "the baseline has no step costs: keep a new one)"
        ]
    )


def _row(costs: list[float], samples_per_s: float = 1000.0, **limits: float) -> dict:
    row = {"fullname": "t.py::test_step[cpu]", "device": "cpu", "group": "g", "samples_per_s": samples_per_s}
    return row | {"step_costs": costs} | limits


# rounds of a step's cost in GEMM units: 1.30 with a 4% spread, the same 1.5x slower, and wide ones
STEADY = [1.30 + 0.01 * (i % 5 - 2) for i in range(30)]
SLOWED = [1.5 * c for c in STEADY]
WIDE = [c * (0.5 if i % 2 else 1.5) for i, c in enumerate(STEADY)]
NOISY = [1.30 * (1 + 0.05 * ((i * 7) % 11 - 5) / 5) for i in range(30)]  # within +-5%
SPREAD = [1.30 * (1 + 0.4 * ((i * 7) % 11 - 5) / 5) for i in range(30)]  # within +-40%


@pytest.mark.parametrize(
    ("baseline", "now", "verdict", "line"),
    [
        (STEADY, STEADY, "passed", None),
        (STEADY, [c * 1.02 for c in STEADY], "passed", None),  # rules out +7%, 0.7 of the 10% limit
        (
            STEADY,
            SLOWED,
            "slower",
            "slower (past the limit): step cost 1.94 GEMM units against the baseline's 1.29 (lower quartiles; "
            "+50.0%, limit +10%;*",
        ),
        (
            NOISY,
            [c * 1.08 for c in NOISY[:20]],  # slower for sure, under the limit, but not under +7%
            "slower",
            "slower (the rounds cannot rule out +7%, 0.7 of the limit): step cost 1.36 * (*+8.0%, limit +10%;"
            "*20/30 rounds*",
        ),
        (
            SPREAD,
            SPREAD,  # the same rounds, but too spread for their lower quartiles to rule out +7%
            "inconclusive",
            "inconclusive, the rounds cannot rule out *not even 480 rounds would tell*",
        ),
        (
            STEADY,
            SLOWED[:1],
            "inconclusive",
            "inconclusive, the rounds cannot rule out *about 30 rounds a run would tell (this run took 1)*"
            "(*+48.8%, *1/30 rounds*",
        ),
    ],
    ids=["same", "within-limit", "slower", "slower-not-ruled-out", "too-wide", "too-few-rounds"],
)
def test_the_benchmark_gate_judges_step_costs_slower_inconclusive_or_the_same(baseline, now, verdict, line):
    from fnmatch import fnmatch

    from trainclaims.gating import gate_benchmarks

    # samples/s fell by half in every case: the machine's speed of the moment, which is not gated
    outcome = gate_benchmarks([_row(baseline, 2000.0)], [_row(now, 1000.0)])
    counts = {"passed": (0, 0), "slower": (1, 0), "inconclusive": (0, 1)}[verdict]
    assert (outcome.changed, outcome.inconclusive) == counts
    if line is None:
        assert outcome.lines == []
    else:
        assert len(outcome.lines) == 1, outcome.lines
        assert fnmatch(outcome.lines[0], f"t.py::test_step[[]cpu[]] [[]cpu[]]: {line}"), outcome.lines
    assert outcome.summary().startswith("benchmarks: 1 compared, ")


def test_a_benchmark_records_its_own_gate_limits_where_it_is_noisier():
    from trainclaims.gating import gate_benchmarks

    slowed_20 = [1.2 * c for c in STEADY]  # past 10%; under 35%, 0.7 of a limit of 50%
    assert gate_benchmarks([_row(STEADY)], [_row(slowed_20)]).changed == 1
    assert gate_benchmarks([_row(STEADY)], [_row(slowed_20, gate_min_effect=0.5)]).lines == []


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        ("--claims-baseline", None, "claims baseline {path} does not exist"),
        ("--claims-baseline", "{not json", "claims baseline {path} is not valid JSON*"),
        ("--claims-baseline", '{"benchmarks": []}', "claims baseline {path} is not a trainclaims claims.json*"),
        ("--bench-baseline", '{"claims": []}', "benchmark baseline {path} is not a trainclaims benchmarks.json*"),
    ],
    ids=["absent", "not-json", "benchmarks-as-claims", "claims-as-benchmarks"],
)
def test_a_missing_broken_or_wrong_baseline_stops_the_run_before_any_test_in_one_line(
    suite, tmp_path, option, content, message
):
    suite.makepyfile(CLAIM_WITH_A_BAND)
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    result = suite.runpytest_inprocess("--device=cpu", f"{option}={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.strip()] == [result.errlines[0]]
    result.stderr.fnmatch_lines(["ERROR: " + message.format(path=path)])
    result.stdout.no_fnmatch_line("*test_accuracy_in_band*")
    assert not (suite.path / "reports").exists(), "no test ran, no report"


MEASURED_BY_FAMILIES = """
import pytest

@pytest.mark.claim("S001-02")
def test_relu_at_zero(device, evidence):
    evidence.record(dtype="torch.float32", device=device, derivative_at_zero={"F.relu": 0.0, "maximum": 0.5})

@pytest.mark.claim("S002-04")
def test_bn_trace(device, evidence):
    trace = {k: [0.0, 1.0] for k in ("running_mean", "ema_mean", "running_var", "ema_var_unbiased", "ema_var_biased")}
    evidence.record(ema_trace=trace, momentum=0.1, batch=16, data="N(3, 2^2)", device=device)
"""


def test_reports_and_family_plots_of_what_ran_are_written_whole_with_the_usual_mode(suite):
    suite.makepyfile(MEASURED_BY_FAMILIES)
    old = os.umask(0o022)
    try:
        result = suite.runpytest_inprocess("--device=cpu")
    finally:
        os.umask(old)
    assert result.ret == 0
    reports = suite.path / "reports"
    assert sorted(p.name for p in reports.iterdir()) == [
        "claims.json",
        "claims.md",
        "s001_relu_derivatives.png",
        "s002_running_stats.png",
    ]
    for path in reports.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, f"{path.name}: {stat.filemode(path.stat().st_mode)}"
    for png in reports.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (reports / "claims.md").read_text()
    assert "**torch**" in text
    assert "**devices**: {cpu:" in text


def test_a_family_draws_nothing_where_its_claims_measured_nothing(suite):
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.claim("S001-02")
        def test_relu(device):
            pass

        @pytest.mark.claim("S002-04")
        def test_bn(device):
            pytest.skip("not here")
        """
    )
    assert suite.runpytest_inprocess("--device=cpu").ret == 0
    assert sorted(p.name for p in (suite.path / "reports").iterdir()) == ["claims.json", "claims.md"]


def test_no_report_writes_nothing(suite):
    suite.makepyfile(CLAIM_WITH_A_BAND)
    assert suite.runpytest_inprocess("--device=cpu", "--no-report").ret == 0
    assert not (suite.path / "reports").exists()


@pytest.mark.parametrize(
    ("flag", "outcome", "why"),
    [
        ("--benchmark-disable", {"passed": 1}, "ran unmeasured (--benchmark-disable)"),
        ("--benchmark-skip", {"skipped": 1}, "skipped: Skipping benchmark (--benchmark-skip active)."),
    ],
    ids=["disable", "skip"],
)
def test_disabled_or_skipped_benchmarks_are_reported_as_not_measured(suite, flag, outcome, why):
    suite.makepyfile(BENCHMARK)
    result = suite.runpytest_inprocess("--device=cpu", flag)
    result.assert_outcomes(**outcome)
    report = json.loads((suite.path / "reports" / "benchmarks.json").read_text())
    assert report["benchmarks"] == []
    assert report["not_measured"] == [
        {"test": "test_disabled_or_skipped_benchmarks_are_reported_as_not_measured.py::test_step", "why": why}
    ]
    assert (
        f"| `{report['not_measured'][0]['test']}` | {why} |" in (suite.path / "reports" / "benchmarks.md").read_text()
    )
    assert not (suite.path / "reports" / "throughput.png").exists()


def test_a_claim_measured_in_the_baseline_and_not_measured_now_fails_the_gate_with_why(suite, monkeypatch):
    suite.makepyfile(
        CLAIM_WITH_A_BAND.replace(
            "    acc = ", '    if os.environ.get("NO_DATA"):\n        pytest.skip("data set lost")\n    acc = '
        )
    )
    assert suite.runpytest_inprocess("--device=cpu").ret == 0
    baseline = keep_baseline(suite, "claims.json")

    monkeypatch.setenv("NO_DATA", "1")
    lost = suite.runpytest_inprocess("--device=cpu", "--no-report", f"--claims-baseline={baseline}")
    assert lost.ret == pytest.ExitCode.TESTS_FAILED
    lost.stdout.fnmatch_lines(["GATE: S000-01: 'holds' in the baseline, not measured in this run (data set lost)"])

    subset = suite.runpytest_inprocess(
        "--device=cpu", "--no-report", f"--claims-baseline={baseline}", "--gate-allow-missing"
    )
    assert subset.ret == 0


def test_a_benchmark_of_the_baseline_that_did_not_run_fails_the_gate(suite):
    suite.makepyfile(BENCHMARK)
    assert suite.runpytest_inprocess("--device=cpu").ret == 0
    baseline = keep_baseline(suite, "benchmarks.json")

    skipped = suite.runpytest_inprocess(
        "--device=cpu", "--no-report", f"--bench-baseline={baseline}", "--benchmark-skip"
    )
    assert skipped.ret == pytest.ExitCode.TESTS_FAILED
    skipped.stdout.fnmatch_lines(["GATE: *::test_step [[]cpu[]]: in the baseline, not measured in this run"])
    allowed = [f"--bench-baseline={baseline}", "--benchmark-skip", "--gate-allow-missing"]
    assert suite.runpytest_inprocess("--device=cpu", "--no-report", *allowed).ret == 0


def test_a_failed_claim_tests_assertion_message_with_its_numbers_is_in_the_report(suite, monkeypatch):
    suite.makepyfile(
        CLAIM_WITH_A_BAND.replace(
            "assert BAND[0] <= acc <= BAND[1]",
            'assert BAND[0] <= acc <= BAND[1], f"accuracy {acc:.2f} left its band {BAND}"',
        )
    )
    monkeypatch.setenv("FAKE_ACCURACY", "0.50")
    assert suite.runpytest_inprocess("--device=cpu").ret == pytest.ExitCode.TESTS_FAILED
    claim = next(
        c for c in json.loads((suite.path / "reports" / "claims.json").read_text())["claims"] if c["id"] == "S000-01"
    )
    assert claim["verdict"] == "fails"
    assert "accuracy 0.50 left its band (0.8, 0.9)" in claim["why"]
    assert "accuracy 0.50 left its band (0.8, 0.9)" in (suite.path / "reports" / "claims.md").read_text()


def test_claim_tests_a_stopped_session_never_reached_are_reported_as_not_run(suite):
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.claim("S000-01")
        def test_fails_first():
            assert False, "stop here"

        @pytest.mark.claim("S000-02")
        def test_never_reached():
            pass
        """
    )
    assert suite.runpytest_inprocess("--device=cpu", "-x").ret == pytest.ExitCode.TESTS_FAILED
    claims = {c["id"]: c for c in json.loads((suite.path / "reports" / "claims.json").read_text())["claims"]}
    assert claims["S000-01"]["verdict"] == "fails"
    assert claims["S000-02"]["verdict"] == "not measured"
    assert claims["S000-02"]["tests"][0]["outcome"] == "not run"
    assert "the session stopped before it" in claims["S000-02"]["why"]


@pytest.mark.slow  # 45-65 s: three pytest runs of a benchmark in subprocesses; CI runs it in the full run
def test_the_benchmark_gate_fails_a_training_step_slowed_1_1x_from_outside_the_project(pytester, monkeypatch):
    """A copy of the BN large-batch benchmark (gated at the default 10%), unchanged, gives the
    baseline, and an unchanged rerun passes; then a conftest of the user's project (nothing of
    trainclaims, no option of ours) follows each optimizer step with a busy wait of a tenth of the
    time since its zero_grad: a training step 1.1 times slower. The gate must fail it, as *slower*
    or as an honest *inconclusive*, never as the same. suites/gate_drill.py runs the same slowdown
    on every benchmark, 10 unchanged reruns and 3 slowed, quiet and beside a busy core
    (docs/reports.md, Gating CI)."""
    from gate_drill import PLUGIN_CODE

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    module = (ROOT / "suites" / "test_bench_throughput.py").read_text()
    select = ["--device=cpu", "-k", "bn_net and large", "-p", "no:cacheprovider"]
    pytester.makepyfile(test_copy_of_bench=module)
    assert pytester.runpytest_subprocess(*select).ret == 0
    baseline = keep_baseline(pytester, "benchmarks.json")
    row = json.loads(baseline.read_text())["benchmarks"][0]
    assert len(row["step_costs"]) >= 30
    assert row["cost_clock"] == "thread-cpu"
    assert "gate_min_effect" not in row  # the default limit, 10%
    rerun = pytester.runpytest_subprocess(*select, "--no-report", f"--bench-baseline={baseline}")
    assert rerun.ret == 0, [line for line in rerun.outlines if line.startswith("GATE: ")]

    pytester.makeconftest(PLUGIN_CODE)
    monkeypatch.setenv("TRAINCLAIMS_DRILL_FACTOR", "1.1")
    slowed = pytester.runpytest_subprocess(*select, "--no-report", f"--bench-baseline={baseline}")
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED
    gate = [line for line in slowed.outlines if line.startswith("GATE: ")]
    assert len(gate) == 1, slowed.outlines[-30:]
    assert "::test_bn_net_step_with_and_without_gradient_accumulation[cpu-large-batch] [cpu]: " in gate[0]
    call = gate[0].split("[cpu-large-batch] [cpu]: ")[1]
    assert call.startswith(("slower", "inconclusive")), gate[0]


@pytest.mark.slow  # 6 s: a pytest run in a subprocess; CI runs it in the full run
def test_the_report_records_numeric_settings_even_where_torch_refuses_to_read_its_legacy_flags(suite):
    """torch 2.9+ raises when allow_tf32 is read after its fp32_precision API set the flags apart; a
    run that did so (here in its conftest) still gets its reports, the setting marked unreadable."""
    suite.makeconftest(
        """
        import torch

        def pytest_configure(config):
            try:
                torch.backends.cuda.matmul.fp32_precision = "ieee"
                torch.backends.cudnn.fp32_precision = "ieee"
            except (AttributeError, AssertionError):  # torch without the fp32_precision API
                pass
        """
    )
    suite.makepyfile(CLAIM_WITH_A_BAND)
    result = suite.runpytest_subprocess("--device=cpu", "-p", "no:cacheprovider")
    assert result.ret == 0
    numerics = json.loads((suite.path / "reports" / "claims.json").read_text())["environment"]["numerics"]
    # each setting once, through the API this torch has (fp32_precision from 2.9, allow_tf32 before)
    assert set(numerics) >= {"float32_matmul_precision", "deterministic_algorithms", "NVIDIA_TF32_OVERRIDE"}
    assert {"cuda.matmul.fp32_precision", "cuda.matmul.allow_tf32"} & set(numerics)


def test_collect_only_writes_no_report_over_the_last_real_one(suite):
    suite.makepyfile(CLAIM_WITH_A_BAND)
    suite.runpytest_inprocess().assert_outcomes(passed=1)
    written = (suite.path / "reports" / "claims.json").read_text()
    suite.runpytest_inprocess("--co", "-q")
    assert (suite.path / "reports" / "claims.json").read_text() == written


def test_trainclaims_baseline_keeps_a_runs_verdicts_and_stops_in_one_line_on_a_file_that_is_not_one(tmp_path, capsys):
    from trainclaims.gating import baseline_main

    run = Path(__file__).resolve().parents[1] / "examples" / "tiny-lm" / "baselines" / "claims.json"
    out = tmp_path / "baselines" / "claims.json"
    assert baseline_main([str(run), str(out)]) == 0
    kept = json.loads(out.read_text())
    assert [c["id"] for c in kept["claims"]] == [f"LM-0{i}" for i in range(1, 6)]
    assert all(not c.get("tests") for c in kept["claims"])
    assert capsys.readouterr().out.startswith(f"trainclaims-baseline: {out}: 5 claims, ")
    (tmp_path / "not.json").write_text("{}")
    assert baseline_main([str(tmp_path / "not.json"), str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainclaims-baseline: ")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_a_benchmark_gated_at_a_wider_limit_says_what_the_default_10_percent_would_call():
    """Its own limit passes the run; the info line says, not gated, what 10% says of the same rounds:
    the same, or inconclusive with about how many rounds a run would tell."""
    from trainclaims.gating import gate_benchmarks

    steady = gate_benchmarks([_row(STEADY)], [_row(STEADY, gate_min_effect=0.2)])
    assert steady.lines == [], steady.lines
    assert steady.info[0].endswith("; at 10%: same (not gated)"), steady.info
    noisy = gate_benchmarks([_row(NOISY)], [_row([c * 1.08 for c in NOISY[:20]], gate_min_effect=0.4)])
    assert noisy.lines == [], noisy.lines  # +8.0% within 0.7 of its 40%
    assert noisy.info[0].endswith("; at 10%: slower (not gated)"), noisy.info  # what the gate at 10% would say
    wide = gate_benchmarks([_row(STEADY)], [_row(WIDE[:6], gate_min_effect=2.0)])
    assert wide.lines == [], wide.lines
    assert "; at 10%: inconclusive, " in wide.info[0], wide.info
    default = gate_benchmarks([_row(STEADY)], [_row(STEADY)])
    assert "at 10%" not in default.info[0], default.info
