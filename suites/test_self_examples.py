"""The example user project (examples/small-cnn: a CNN of its own, a claim family in its conftest,
claims measured with trainclaims.checks) run from the outside, as its user runs it: its report
lists only its own family, its baseline gate passes, and a deliberately broken variant (the loss
not divided by k) fails with the check's numbers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.trainclaims

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "small-cnn"


@pytest.fixture
def project(pytester):
    for entry in EXAMPLE.iterdir():
        if entry.name in ("reports", "__pycache__", ".pytest_cache"):
            continue
        target = pytester.path / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(entry, target)
    return pytester


@pytest.mark.slow  # 20 s; CI also runs the example itself (the README's quick start)
def test_the_example_project_passes_its_gate_and_reports_only_its_own_family(project):
    # in a subprocess: the DDP check's rank processes import the project's model module
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--claims-baseline", "baselines/claims.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*trainclaims gate passed*", "claims: 8 compared, 0 changed, 0 missing"])
    claims = json.loads((project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims] == [(f"CNN-0{i}", "holds") for i in range(1, 9)]
    text = (project.path / "reports" / "claims.md").read_text()
    assert "## CNN: Training our small CNN" in text
    assert "S000" not in text
    assert "S001" not in text
    # its own benchmark, with FLOP/s of a CNN and its note
    bench = (project.path / "reports" / "benchmarks.md").read_text()
    assert "## small CNN training step, batch 64" in bench
    assert "convolution FLOPs 2,949,120 of 8,275,968 a step (FlopCounterMode)" in bench
    # its family's compare section, as the README says to run it from the project's folder
    args = ["reports", "reports", "--out", "cmp", "--family", "conftest:FAMILY"]
    compare = subprocess.run(
        [sys.executable, "-m", "trainclaims.compare", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stderr
    text = (project.path / "cmp" / "compare.md").read_text()
    assert "## CNN: the gap each check measured" in text
    assert "| CNN-05 ddp_against_one_process [2] |" in text


@pytest.mark.slow  # 8 s of a pytest start in a subprocess; test_self_checks.py has the failure in the fast tier
def test_a_broken_variant_fails_with_the_checks_numbers(project):
    test_file = project.path / "tests" / "test_cnn_claims.py"
    test_file.write_text(test_file.read_text().replace("k=4, divide=True", "k=4, divide=False"))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "accumulation_equals")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: accumulation: 4 micro-batches with the loss undivided equal one batch 4 times larger"
            " after 3 steps: gap * (needs <= 0.0001): does not hold*k=4, steps=3, batch=32, divide=False*"
        ]
    )
    claims = json.loads((project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims if c["id"] == "CNN-01"] == [("CNN-01", "fails")]
