"""Self-tests of the plugin's boundary (fixtures/boundary.py): a project that has not asked for
trainclaims runs exactly as without it, and in a project that has, only its trainclaims tests are
touched. Run from the outside with pytester (in this process; the one check of what a pytest start
imports runs in a fresh interpreter)."""

import re
import subprocess
import sys

import pytest
import torch._inductor.config  # noqa: F401  before pytester's in-process runs: torch.use_deterministic_algorithms

# (the numerics guard's) imports it, and a second import after pytester put sys.modules back
# registers inductor's test library twice

# pytest -p no:... for every entry point of the installed project: the run "without trainclaims"
ENTRY_POINTS = ("trainclaims", "trainclaims-s000", "trainclaims-s001", "trainclaims-s002")
WITHOUT = [arg for name in ENTRY_POINTS for arg in ("-p", f"no:{name}")]
OUTCOME_LINE = re.compile(r"^(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b.*")

# A PyTorch-style project of its own: a parametrized `device` fixture, a failure that reads like a
# capability gap, a hypothesis property that relies on hypothesis's defaults, an environment
# variable trainclaims would set, and a numeric setting one test leaves behind for the next.
FOREIGN_CONFTEST = """
import pytest


@pytest.fixture(params=["cpu", "meta"])
def device(request):
    return request.param
"""
FOREIGN_TESTS = """
import os

from hypothesis import given, settings, strategies as st


def test_uses_my_device(device):
    assert device in ("cpu", "meta")


def test_fails_with_a_message_like_a_missing_kernel():
    raise RuntimeError('"foo" not implemented for \\'Half\\'')


@given(st.integers())
def test_a_property_with_hypothesis_defaults(n):
    assert settings.default.max_examples == 100  # hypothesis's own default: no profile of another's


def test_nothing_was_set_in_the_environment():
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_leaves_tf32_on():
    import torch

    torch.set_float32_matmul_precision("high")


def test_sees_what_the_previous_test_left():
    import torch

    assert torch.get_float32_matmul_precision() == "high"  # no guard of another plugin in between
"""


def outcomes(result: pytest.RunResult) -> list[str]:
    return sorted(m.group(0) for line in result.outlines if (m := OUTCOME_LINE.match(line)))


@pytest.fixture
def foreign(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    pytester.makeconftest(FOREIGN_CONFTEST)
    pytester.makepyfile(test_other=FOREIGN_TESTS)
    return pytester


def test_a_project_that_did_not_ask_for_trainclaims_runs_as_without_it(foreign):
    without = foreign.runpytest_inprocess("-rA", "-p", "no:cacheprovider", *WITHOUT)
    with_it = foreign.runpytest_inprocess("-rA", "-p", "no:cacheprovider")
    without.assert_outcomes(passed=6, failed=1)
    assert outcomes(with_it) == outcomes(without)
    assert with_it.ret == without.ret == pytest.ExitCode.TESTS_FAILED
    with_it.stdout.fnmatch_lines(["FAILED test_other.py::test_fails_with_a_message_like_a_missing_kernel - *"])
    with_it.stdout.no_fnmatch_line("trainclaims:*")  # no header, no "reports written"
    assert not (foreign.path / "reports").exists()


def test_in_a_project_that_asked_only_its_trainclaims_tests_are_touched(foreign):
    """A trainclaims option used (--device=cpu) and claim tests beside the project's own tests:
    the claim tests are parametrized (where the project has no fixture of that name) and reported;
    the others keep their outcomes."""
    foreign.makepyfile(
        test_claim="""
        import pytest

        @pytest.mark.claim("S001-01")
        def test_mine(numerics, evidence):
            evidence.record(numerics=numerics)

        @pytest.mark.claim("S001-03")
        def test_on_their_device(device):  # the project's own `device` fixture serves it
            assert device in ("cpu", "meta")

        @pytest.mark.claim("S002-01")
        def test_a_gap():
            raise RuntimeError('"foo" not implemented for \\'Half\\'')
        """
    )
    without = foreign.runpytest_inprocess("-rA", "-p", "no:cacheprovider", *WITHOUT, "test_other.py")
    with_it = foreign.runpytest_inprocess("-rA", "-p", "no:cacheprovider", "--device=cpu", "--report-dir=out")
    assert [line for line in outcomes(with_it) if "test_other.py" in line] == outcomes(without)
    with_it.stdout.fnmatch_lines(["PASSED test_claim.py::test_mine[[]ieee[]]"])
    with_it.stdout.fnmatch_lines(["PASSED test_claim.py::test_on_their_device[[]meta[]]"])
    # ours only: an undeclared gap fails, saying how to declare it (theirs ran as without trainclaims)
    with_it.stdout.fnmatch_lines(["FAILED test_claim.py::test_a_gap - Failed: unsupported on torch *"])
    assert 'declared nowhere: RuntimeError: "foo" not implemented for' in with_it.stdout.str()
    report = (foreign.path / "out" / "claims.json").read_text()
    assert "test_claim.py::test_mine[ieee]" in report
    assert "test_other.py" not in report


def test_trainclaims_paths_makes_a_folder_a_claims_suite_and_leaves_the_rest(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeini("[pytest]\ntrainclaims_paths = claims\n")
    pytester.mkdir("claims")
    pytester.mkdir("other")
    (pytester.path / "claims" / "test_in_suite.py").write_text("def test_a(device):\n    assert device == 'cpu'\n")
    (pytester.path / "other" / "test_outside.py").write_text("def test_b(device):\n    pass\n")
    result = pytester.runpytest_inprocess("-rA", "-p", "no:cacheprovider", "--device=cpu", "--no-report")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "the trainclaims fixture 'device' is for trainclaims tests: mark the test with @pytest.mark.claim('ID') "
            "or @pytest.mark.trainclaims, or list its folder in the ini setting trainclaims_paths*",
            "PASSED claims/test_in_suite.py::test_a[[]cpu[]]",
            "ERROR other/test_outside.py::test_b - *",
        ]
    )


def test_importing_the_plugin_imports_no_torch():
    code = "import sys, trainclaims.fixtures.plugin, trainclaims.families; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_pytest_start_in_a_project_without_trainclaims_tests_imports_no_torch(pytester, monkeypatch):
    """What ``pytest --co`` costs a project that merely has trainclaims installed: no torch."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest(
        "import sys\n\n\ndef pytest_sessionfinish(session):\n"
        "    (session.config.rootpath / 'imported').write_text(str(sorted(\n"
        "        m for m in ('torch', 'torchvision', 'matplotlib', 'trainclaims.results') if m in sys.modules)))\n"
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider")
    assert result.ret == 0
    assert (pytester.path / "imported").read_text() == "[]"
