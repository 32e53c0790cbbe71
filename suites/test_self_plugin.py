"""Self-tests of the suite's plugin: the suite is run on small test files with pytester and its
output matched (devices, --require-gpu, data skips and errors, claim ids, --claims, reports)."""

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401  imported here, not first inside an in-process run: pytester unloads

from trainclaims.claims import Family
from trainclaims.known import HALF_BATCH_NORM_CPU

# what a run imported, and torchvision cannot be imported twice in one process

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour on a machine without CUDA")

DEVICE_TEST = """
def test_runs(device):
    assert device
"""

DATA_TEST = """
import pytest

@pytest.mark.parametrize("tier", [{tier!r}])
def test_loads(data):
    assert data.x_train.max() <= 1
"""


@no_cuda
def test_gpu_instances_are_skipped_with_the_reason_when_cuda_is_absent(suite):
    suite.makepyfile(DEVICE_TEST)
    result = suite.runpytest_inprocess("-m", "gpu", "-rs", "-v")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*::test_runs?cuda? SKIPPED*", "SKIPPED [[]1[]] *: CUDA not available*"])
    assert result.ret == 0


def test_every_device_instance_has_the_device_as_its_id_and_only_non_cpu_ones_are_gpu(suite):
    suite.makepyfile(DEVICE_TEST)
    result = suite.runpytest_inprocess("--device", "cpu,cuda:1", "--collect-only", "-q", "-m", "not gpu")
    result.stdout.fnmatch_lines(["*test_runs?cpu?", "*1/2 tests collected (1 deselected)*"])


@no_cuda
def test_require_gpu_without_cuda_exits_non_zero_with_one_line(suite):
    suite.makepyfile(DEVICE_TEST)
    result = suite.runpytest_inprocess("-m", "gpu", "--require-gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [errors[0]], result.errlines
    assert errors[0].startswith("ERROR: --require-gpu: CUDA not available for cuda")


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "gpu", ""])
def test_an_unknown_device_is_a_usage_error_naming_the_accepted_values(suite, value):
    suite.makepyfile(DEVICE_TEST)
    result = suite.runpytest_inprocess(f"--device={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --device: *accepted: auto, cpu, cuda, cuda:N, mps*"])


@pytest.mark.parametrize(
    ("tier", "fix"),
    [
        ("cifar10", "CIFAR-10 not found under */no-data/cifar-10-batches-py (pass --download*"),
        ("fashion-mnist", "Fashion-MNIST not found under */no-data/FashionMNIST/raw (install Debian's*"),
    ],
)
def test_a_missing_dataset_skips_with_the_fix_in_the_reason(suite, tier, fix):
    suite.makepyfile(DATA_TEST.format(tier=tier))
    result = suite.runpytest_inprocess("--device=cpu", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED*{fix}"])


def test_a_truncated_dataset_file_is_an_error_naming_the_file(suite, tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    sizes = {"train-images-idx3-ubyte": (0x803, 60000, 28, 28), "train-labels-idx1-ubyte": (0x801, 60000)}
    sizes |= {"t10k-images-idx3-ubyte": (0x803, 10000, 28, 28), "t10k-labels-idx1-ubyte": (0x801, 10000)}
    for name, (magic, *dims) in sizes.items():
        header = b"".join(v.to_bytes(4, "big") for v in (magic, *dims))
        (raw / name).write_bytes(header + bytes(100))  # the header promises far more than 100 bytes
    suite.makepyfile(DATA_TEST.format(tier="fashion-mnist"))
    result = suite.runpytest_inprocess("--device=cpu", f"--data-root={tmp_path / 'data'}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "DataCorrupt: */FashionMNIST/raw/train-images-idx3-ubyte: "
            "truncated or padded idx file (116 bytes, expected 47040016)"
        ]
    )
    result.stdout.no_fnmatch_line("*pickle*")


def test_a_truncated_gz_is_an_error_naming_the_gz(suite, tmp_path, monkeypatch):
    system = tmp_path / "system"
    system.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (system / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00")  # a gzip header and nothing else
    monkeypatch.setenv("TRAINCLAIMS_SYSTEM_DATA", str(system))
    suite.makepyfile(DATA_TEST.format(tier="fashion-mnist"))
    result = suite.runpytest_inprocess("--device=cpu")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["DataCorrupt: */system/*-ubyte.gz: cannot be unpacked*"])
    assert not list((tmp_path / "no-data").rglob("*-ubyte")), "a half-unpacked file was left behind"


@pytest.mark.parametrize(
    ("mark", "message"),
    [("claim('S999-01')", "unknown claim id 'S999-01'"), ("claim", "claim mark needs exactly one claim id, got ()")],
)
def test_an_unknown_or_missing_claim_id_stops_the_run_before_any_test(suite, mark, message):
    suite.makepyfile(f"import pytest\n\n@pytest.mark.{mark}\ndef test_x():\n    pass\n")
    result = suite.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: claim mark: *::test_x: {message}*"])


def test_claims_lists_the_runs_families_with_each_claims_guard_and_tests(suite):
    suite.makepyfile("import pytest\n\n@pytest.mark.claim('S001-02')\ndef test_relu_at_zero():\n    pass\n")
    result = suite.runpytest_inprocess("--claims")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "S001-02  *at exactly 0*",
            "    guard: relu-gradient-one-at-zero",
            "    test_*.py::test_relu_at_zero",
            "S001-03  *",
        ]
    )
    result.stdout.fnmatch_lines(["8 claims, 1 with tests in this selection"])
    result.stdout.fnmatch_lines(["other families installed, without tests here: HF, S000, S002, TP (list one with *"])
    assert "S002-01" not in result.stdout.str()  # another family's catalogue is not printed
    result.assert_outcomes()


def test_the_claim_report_rolls_tests_up_into_verdicts(suite):
    suite.makepyfile(
        """
        import pytest
        from trainclaims.claims import Verdict

        @pytest.mark.claim("S000-04")
        def test_holds(evidence):
            evidence.record(x=1.5)

        @pytest.mark.claim("S000-11")
        def test_refuted(evidence):
            evidence.conclude(Verdict.REFUTED, "an MLP got 60%")

        @pytest.mark.claim("S002-10")
        def test_skipped():
            pytest.skip("needs CUDA")

        @pytest.mark.claim("S000-05")
        def test_fails():
            assert False

        @pytest.mark.claim("S000-06")
        def test_smoke(evidence):
            evidence.conclude(Verdict.NOT_MEASURED, "smoke run only")

        @pytest.mark.slow
        @pytest.mark.claim("S000-07")
        def test_slow():
            pass
        """
    )
    result = suite.runpytest_inprocess("--report-dir=out", "-m", "not slow")
    result.assert_outcomes(passed=3, skipped=1, failed=1, deselected=1)
    report = json.loads((suite.path / "out" / "claims.json").read_text())
    verdicts = {c["id"]: (c["verdict"], c["why"]) for c in report["claims"]}
    assert verdicts["S000-04"] == ("holds", "")
    assert verdicts["S000-11"] == ("refuted", "an MLP got 60%")
    assert verdicts["S002-10"] == ("not measured", "needs CUDA")
    assert verdicts["S000-05"][0] == "fails"
    assert verdicts["S000-06"] == ("not measured", "smoke run only")
    assert verdicts["S000-07"] == ("not measured", "not selected in this run")
    assert report["environment"]["torch"] == torch.__version__
    assert "| S000-11 | **refuted** |" in (suite.path / "out" / "claims.md").read_text()
    assert not list((suite.path / "out").glob(".*tmp")), "temporary files left behind"
    # the report covers the families this run collected tests of: S001 had none
    assert {c["family"] for c in report["claims"]} == {"S000", "S002"}
    assert "S001-02" not in verdicts
    # ... or those chosen with the ini setting (here on the command line)
    chosen = suite.runpytest_inprocess("--report-dir=out", "-m", "not slow", "-o", "trainclaims_families=S001 S002")
    chosen.assert_outcomes(passed=3, skipped=1, failed=1, deselected=1)
    report = json.loads((suite.path / "out" / "claims.json").read_text())
    verdicts = {c["id"]: (c["verdict"], c["why"]) for c in report["claims"]}
    assert {c["family"] for c in report["claims"]} == {"S001", "S002"}
    assert verdicts["S001-02"] == ("not measured", "no test of it was collected in this run")
    unknown = suite.runpytest_inprocess("-o", "trainclaims_families=S001 NOPE")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(
        ["*trainclaims_families: no claim family NOPE (registered: HF, S000, S001, S002, TP)*"]
    )


# --------------------------------------------------------------------------- path options

PROJECT_INI = """
[pytest]
trainclaims_paths = .
addopts = --strict-markers
markers =
    mine: a marker only the project's ini declares (dropped ini: "'mine' not found in markers")
"""
MARKED_TEST = """
import pytest

@pytest.mark.mine
def test_marked():
    pass
"""
PATH_OPTIONS = ["--data-root", "--report-dir", "--claims-baseline", "--bench-baseline"]


@pytest.fixture
def project(suite, tmp_path_factory):
    """A checkout-like folder with its own ini, and an existing folder and file outside it."""
    suite.makeini(PROJECT_INI)
    suite.makepyfile(MARKED_TEST)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "baseline.json").write_text(json.dumps({"claims": [], "benchmarks": []}))
    return suite, outside


def outside_value(outside: Path, option: str) -> str:
    return str(outside / "baseline.json" if option.endswith("baseline") else outside)


@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_a_path_option_outside_the_checkout_works_in_the_equals_form(project, option):
    suite, outside = project
    result = suite.runpytest_inprocess("--device=cpu", f"{option}={outside_value(outside, option)}")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_a_path_option_given_separately_runs_where_pytest_reads_it_right_and_stops_in_one_line_where_not(
    project, option
):
    suite, outside = project
    fresh = str(outside / "not-yet" / "there")  # not a path yet: pytest does not take it for a test path
    fresh_run = suite.runpytest_inprocess("--device=cpu", option, fresh)
    if option.endswith("baseline"):  # the value reached the option: a baseline must exist
        assert fresh_run.ret == pytest.ExitCode.USAGE_ERROR
        fresh_run.stderr.fnmatch_lines([f"ERROR: * baseline {fresh} does not exist"])
    elif option == "--data-root":  # and so must a data root given explicitly
        assert fresh_run.ret == pytest.ExitCode.USAGE_ERROR
        fresh_run.stderr.fnmatch_lines([f"ERROR: --data-root={fresh}: does not exist*"])
    else:
        fresh_run.assert_outcomes(passed=1)
    inside = "reports" if option in ("--data-root", "--report-dir") else "baseline-inside.json"
    if inside == "reports":
        (suite.path / inside).mkdir()
    else:
        (suite.path / inside).write_text(json.dumps({"claims": [], "benchmarks": []}))
    suite.runpytest_inprocess("--device=cpu", option, inside).assert_outcomes(passed=1)

    value = outside_value(outside, option)
    result = suite.runpytest_inprocess("--device=cpu", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, result.errlines
    assert errors[0].startswith(f"ERROR: {option} {value}: pytest took {value} for a test path")
    assert errors[0].endswith(f"write it as {option}={value}")
    result.stdout.no_fnmatch_line("*test_marked*")


# --------------------------------------------------------------------------- installation


@pytest.mark.slow  # 8 s: an install into a fresh environment; CI runs it in the full run
def test_the_suite_runs_beside_pypis_fixtures_package(suite, tmp_path, monkeypatch):
    """PyPI's `fixtures` (testing-cabal) is a top-level package of that name: it comes first on
    sys.path here, and the plugin (imported as trainclaims.fixtures) never reaches for it."""
    shadow = tmp_path / "site" / "fixtures"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("FROM_PYPI = True\n\n\nclass Fixture:\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]))
    suite.makepyfile(
        """
        import fixtures
        import pytest
        from trainclaims.families.seed.engine import TrainConfig

        @pytest.mark.claim("S000-01")
        @pytest.mark.parametrize("tier", ["synthetic"])
        def test_both(data, trainer, evidence):
            assert fixtures.FROM_PYPI, "the PyPI package is what `import fixtures` finds"
            result = trainer(TrainConfig(model="fc", epochs=1, hidden=8), data)
            evidence.record(acc=result.final_accuracy)
        """
    )
    result = suite.runpytest_subprocess("--device=cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert (
        json.loads((suite.path / "reports" / "claims.json").read_text())["claims"][0]["tests"][0]["outcome"] == "passed"
    )


# --------------------------------------------------------------------------- claim families

FAMILY_CONFTEST = """
import pytest
from trainclaims.claims import Family


def draw(ctx):
    measured = ctx.measured("X900-01", "answer")
    path = ctx.report_dir / "x900.txt"
    path.write_text(f"{len(measured)} test(s): {measured[0]}")
    return [path]


@pytest.hookimpl(optionalhook=True)
def pytest_trainclaims_families():
    return [Family("X900", "A family from a conftest", "X900-01 | Plugging in needs no edit of the core.", (draw,))]
"""


def test_a_claim_family_plugs_in_from_a_plugin_with_its_claims_and_report_part(suite):
    suite.makeconftest(FAMILY_CONFTEST)
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.claim("X900-01")
        def test_x(evidence):
            evidence.record(answer=42)
        """
    )
    result = suite.runpytest_inprocess("--device=cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["trainclaims: claim families HF, S000, S001, S002, TP, X900"])
    assert (suite.path / "reports" / "x900.txt").read_text() == "1 test(s): {'answer': 42}"
    claims = json.loads((suite.path / "reports" / "claims.json").read_text())["claims"]
    assert [c["verdict"] for c in claims if c["id"] == "X900-01"] == ["holds"]
    assert "## X900: A family from a conftest" in (suite.path / "reports" / "claims.md").read_text()
    assert suite.runpytest_inprocess("--claims").stdout.str().count("X900-01") == 1


NESTED_TEST = """
import pytest

@pytest.mark.claim("X900-01")
def test_x(evidence):
    evidence.record(answer=42)
"""


@pytest.mark.parametrize(
    "workers", [[], pytest.param(["-n", "2"], marks=pytest.mark.slow)], ids=["one process", "xdist"]
)
def test_a_family_in_a_nested_conftest_exists_for_its_tests_and_only_it_is_reported(suite, workers):
    if workers:
        pytest.importorskip("xdist")
    nested = suite.mkpydir("tests") / "mynet"
    nested.mkdir()
    (nested / "conftest.py").write_text(FAMILY_CONFTEST)
    (nested / "test_mynet.py").write_text(NESTED_TEST)
    result = suite.runpytest_inprocess("--device=cpu", "-p", "no:randomly", *workers)  # from the root
    result.assert_outcomes(passed=1)
    claims = json.loads((suite.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims] == [("X900-01", "holds")]  # not the 34 built-in claims
    assert "## S000" not in (suite.path / "reports" / "claims.md").read_text()


def test_catalogue_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"claim id 'mynet-01' must be upper case \('MYNET-01'\)"):
        Family("MYNET", "t", "mynet-01 | a claim")
    with pytest.raises(ValueError, match="claim MYNET-01 is in the catalogue twice"):
        Family("MYNET", "t", "MYNET-01 | a claim\nMYNET-01 | another")
    with pytest.raises(ValueError, match="claim OTHER-01 does not start with MYNET-"):
        Family("MYNET", "t", "OTHER-01 | a claim")


# --------------------------------------------------------------------------- capability gaps

CAPABILITY = """
import pytest
import torch


@pytest.mark.claim("S002-01")
def test_kernel_missing_for_a_dtype():
    raise RuntimeError('"foo" not implemented for \\'Half\\'')


@pytest.mark.claim("S002-05")
def test_a_known_gap():
    raise RuntimeError('"batch_norm" not implemented for \\'Half\\'')


@pytest.mark.claim("S002-02")
def test_torch_raises_not_implemented():
    torch.nn.Module().forward()  # raised inside torch (nn.Module's unimplemented forward)


@pytest.mark.claim("S002-03")
def test_our_own_not_implemented_is_a_failure():
    raise NotImplementedError("the test's own code")


@pytest.mark.claim("S002-04")
def test_another_runtime_error_is_a_failure():
    raise RuntimeError("expected all tensors to be on the same device")
"""


GAP_IN_A_PROPERTY = """
import pytest
from hypothesis import given, strategies as st


@pytest.mark.claim("S002-01")
@given(n=st.integers(0, 10))
def test_fails_on_some_examples(n):
    if n > 5:
        raise RuntimeError('"relu_cpu" not implemented for \\'Half\\'')
"""


def test_a_property_that_meets_an_undeclared_gap_on_some_examples_fails(suite):
    """Before, any "not implemented for" on any example skipped the whole property, exit 0."""
    suite.makepyfile(GAP_IN_A_PROPERTY)
    result = suite.runpytest_inprocess("--device=cpu", "-rf")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*declared nowhere: RuntimeError: \"relu_cpu\" not implemented for 'Half'*"])


def test_only_a_declared_capability_gap_skips_and_every_other_error_fails(suite):
    suite.makepyfile(CAPABILITY)
    result = suite.runpytest_inprocess("--device=cpu", "-rs")
    # float16 batch_norm on CPU: missing before torch 2.2 (a known gap, skipped), there from 2.2 on
    # (where torch refuses it, that is an unknown change: it fails, naming the table's range); an
    # op missing that no table declares fails, saying how to declare it
    has_it = HALF_BATCH_NORM_CPU.known.expected()
    result.assert_outcomes(skipped=not has_it, failed=4 + has_it)
    claims = {c["id"]: c for c in json.loads((suite.path / "reports" / "claims.json").read_text())["claims"]}
    version = torch.__version__
    assert claims["S002-01"]["verdict"] == "fails"
    assert (
        f"unsupported on torch {version} and declared nowhere: RuntimeError: \"foo\" not implemented for 'Half'. "
        "If this torch lacks the op on purpose, declare the gap" in claims["S002-01"]["why"]
    )
    if has_it:
        assert claims["S002-05"]["verdict"] == "fails"
        assert "float16 batch_norm on CPU: False on torch" in claims["S002-05"]["why"]
        assert "expected True for torch >=2.2" in claims["S002-05"]["why"]
    else:
        assert claims["S002-05"]["verdict"] == "not measured"
        assert "a known gap: float16 batch_norm on CPU (torch >=2.2 has it" in claims["S002-05"]["why"]
    assert claims["S002-02"]["verdict"] == "fails"
    assert f"unsupported on torch {version} and declared nowhere: NotImplementedError: " in claims["S002-02"]["why"]
    assert claims["S002-03"]["verdict"] == "fails"
    assert claims["S002-04"]["verdict"] == "fails"
