"""Self-tests of what a run tells CI: bad input stops it before any test in one line per problem
(exit code 4); the session's end never raises; the gates' outcome is in the final summary line,
the JUnit XML, the step summary and a terminal section; one verdict line per claim at the end."""

import json
import xml.etree.ElementTree as ET
from fnmatch import fnmatch

import pytest
import torchvision  # noqa: F401  imported before pytester's in-process runs (see test_self_plugin)

from trainclaims.results import SCHEMA

TWO_CLAIMS = """
import pytest

@pytest.mark.claim("S000-01")
def test_holds(evidence):
    evidence.record(x=1)

@pytest.mark.claim("S000-02")
def test_also_holds():
    pass
"""


def usage_errors(result: pytest.RunResult) -> list[str]:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.outlines[-5:]
    result.stdout.no_fnmatch_line("*passed*")  # no test ran
    return [line for line in result.errlines if line.strip()]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "/proc/x",
            "ERROR: --report-dir=/proc/x: cannot be made or written to (*); give a writable folder or --no-report",
        ),
        ("afile/reports", "ERROR: --report-dir=afile/reports: cannot be made or written to (*"),
        ("", "ERROR: --report-dir=: no folder given; give one (default: reports) or pass --no-report"),
    ],
)
def test_a_report_folder_that_cannot_be_written_stops_the_run_before_any_test(suite, value, message):
    suite.makepyfile(TWO_CLAIMS)
    (suite.path / "afile").write_text("a file, not a folder")
    errors = usage_errors(suite.runpytest_inprocess(f"--report-dir={value}"))
    assert len(errors) == 1, errors
    assert fnmatch(errors[0], message), errors[0]


def test_an_explicit_data_root_that_is_not_there_stops_the_run_and_creates_nothing(suite, tmp_path):
    suite.makepyfile(TWO_CLAIMS)
    typo = tmp_path / "nonexistent" / "typo"
    errors = usage_errors(suite.runpytest_inprocess(f"--data-root={typo}"))
    fix = f"give an existing folder (mkdir -p {typo}) or leave it out for ./data"
    assert errors == [f"ERROR: --data-root={typo}: does not exist; {fix}"]
    assert not typo.parent.exists()


def test_every_bad_input_is_one_line_in_one_stop(suite, tmp_path):
    """A baseline with a verdict that is none, an unknown --numerics mode and a missing data root:
    all three at once, not the first alone."""
    suite.makepyfile(TWO_CLAIMS)
    baseline = tmp_path / "claims.json"
    baseline.write_text(json.dumps({"claims": [{"id": "S000-01", "verdict": "bogus"}]}))
    result = suite.runpytest_inprocess(
        f"--claims-baseline={baseline}", "--numerics=ieee,fast", f"--data-root={tmp_path / 'gone'}"
    )
    errors = usage_errors(result)
    assert len(errors) == 3, errors
    assert errors[0].startswith("ERROR: --numerics: unknown mode 'fast'")
    assert errors[1] == (
        f"ERROR: claims baseline {baseline}: claim S000-01: verdict 'bogus' is not one of "
        "'holds', 'refuted', 'conditional', 'fails', 'not measured', 'error'"
    )
    assert errors[2].startswith(f"ERROR: --data-root={tmp_path / 'gone'}: does not exist")


def test_every_unknown_claim_id_of_the_run_is_named_at_once(suite):
    suite.makepyfile(
        test_a="import pytest\n\n@pytest.mark.claim('S999-01')\ndef test_x():\n    pass\n\n"
        "@pytest.mark.claim('S999-02')\ndef test_y():\n    pass\n",
        test_b="import pytest\n\n@pytest.mark.claim\ndef test_z():\n    pass\n",
    )
    errors = usage_errors(suite.runpytest_inprocess())
    assert len(errors) == 3, errors
    assert errors[0].startswith("ERROR: claim mark: test_a.py::test_x: unknown claim id 'S999-01'")
    assert errors[1].startswith("ERROR: claim mark: test_a.py::test_y: unknown claim id 'S999-02'")
    assert errors[2] == "ERROR: claim mark: test_b.py::test_z: claim mark needs exactly one claim id, got ()"


@pytest.mark.parametrize(
    ("catalogue", "message"),
    [
        ("X900-01 | one.\\nX900-01 | the same id again.", "family X900: claim X900-01 is in the catalogue twice"),
        ("x900-01 | lower case.", "family X900: claim id 'x900-01' must be upper case ('X900-01')"),
    ],
)
def test_a_catalogue_error_says_what_is_wrong(suite, catalogue, message):
    suite.makeconftest(
        "import pytest\nfrom trainclaims.claims import Family\n\n\n@pytest.hookimpl(optionalhook=True)\n"
        f"def pytest_trainclaims_families():\n    return [Family('X900', 'mine', '{catalogue}')]\n"
    )
    suite.makepyfile(TWO_CLAIMS)
    errors = usage_errors(suite.runpytest_inprocess())
    assert errors == [f"ERROR: claim families: {message}"]


FAILING_PART = """
import pytest
from trainclaims.claims import Family


def broken(ctx):
    raise RuntimeError("the plot library is gone")


@pytest.hookimpl(optionalhook=True)
def pytest_trainclaims_families():
    return [Family("X900", "A family whose report part fails", "X900-01 | Parts may fail.", (broken,))]
"""


def test_a_report_part_that_fails_is_named_and_fails_the_run_but_the_rest_is_written_and_gated(suite, tmp_path):
    suite.makeconftest(FAILING_PART)
    suite.makepyfile(TWO_CLAIMS)
    baseline = tmp_path / "claims.json"
    baseline.write_text(json.dumps({"claims": [{"id": "S000-01", "verdict": "holds"}]}))
    # the run's tests are S000's; X900 is reported (its part drawn) because the ini setting names it
    result = suite.runpytest_inprocess(
        f"--claims-baseline={baseline}", "--junitxml=junit.xml", "-o", "trainclaims_families=S000 X900"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["REPORT: family X900's report part broken failed: RuntimeError: the plot library is gone"]
    )
    result.stdout.fnmatch_lines(["*trainclaims gate passed*", "claims: 1 compared, 0 changed, 0 missing"])
    result.stdout.fnmatch_lines(["* 1 failed, 2 passed*"])  # the reports' failure is a test case
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    assert json.loads((suite.path / "reports" / "claims.json").read_text())["schema"] == SCHEMA


def test_a_failed_gate_shows_in_the_summary_line_the_junit_xml_and_the_step_summary(suite, tmp_path, monkeypatch):
    suite.makepyfile(TWO_CLAIMS)
    baseline = tmp_path / "claims.json"
    baseline.write_text(json.dumps({"claims": [{"id": "S000-01", "verdict": "refuted", "why": "measured so"}]}))
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = suite.runpytest_inprocess(f"--claims-baseline={baseline}", "--junitxml=junit.xml", "--no-report")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*trainclaims gate failed*",
            "claims: 1 compared, 1 changed, 0 missing",
            "GATE: S000-01: verdict changed from 'refuted' to 'holds' ()",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED trainclaims::gate - S000-01: verdict changed*", "* 1 failed, 2 passed*"])
    suite_xml = ET.parse(suite.path / "junit.xml").getroot().find("testsuite")
    assert suite_xml.get("failures") == "1"
    cases = {c.get("name"): c for c in suite_xml.iter("testcase")}
    assert "S000-01: verdict changed from 'refuted' to 'holds'" in cases["gate"].find("failure").get("message")
    props = {p.get("name"): p.get("value") for p in cases["test_holds"].iter("property")}
    assert props == {"claim": "S000-01", "numerics": "ieee", "verdict": "holds"}
    text = summary.read_text()
    assert "| S000-01 | **holds** | 1/0/0 |" in text
    assert "- gate **failed**: claims: 1 compared, 1 changed, 0 missing" in text
    assert "  - S000-01: verdict changed from 'refuted' to 'holds' ()" in text


def test_the_end_of_the_output_has_one_verdict_line_per_claim_and_says_where_the_reports_went(suite):
    suite.makepyfile(TWO_CLAIMS)
    result = suite.runpytest_inprocess("-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*trainclaims: claims*",
            "S000-01    holds            1/0/0  ",
            "S000-02    holds            1/0/0  ",
            "(9 more claims of the catalogue have no test in this run)",  # of S000, the family run here
            "trainclaims: reports written to */reports: claims.json, claims.md",
        ]
    )


def test_evidence_recorded_by_a_test_without_a_claim_is_a_warning_not_silence(suite):
    suite.makepyfile("def test_x(evidence):\n    evidence.record(x=1)\n")
    result = suite.runpytest_inprocess()
    assert result.parseoutcomes()["passed"] == 1  # a warning in the summary (an error under -W error)
    result.stdout.fnmatch_lines(["*evidence recorded by a test without a claim mark goes in no report*"])
