"""The example user projects run from the outside, as their users run them: examples/small-cnn (a
CNN of its own, a claim family in its conftest, claims measured with trainclaims.checks) and
examples/tiny-lm (a causal language model: padded sequences as dict batches, AdamW, a GradScaler,
checkpointed blocks) and examples/hf-lm (a GPT-2 from transformers as it comes, its own loop and
Trainer). Each report lists only its own family, each baseline gate passes, and a deliberately
broken variant fails with the check's numbers (the CNN's loss not divided by k; the LM's
accumulation normalized by each micro-batch's own token count; the GPT-2 loop dividing each
micro-batch's mean by k)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.trainclaims

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE = EXAMPLES / "small-cnn"


def copy_example(pytester, example: Path):
    for entry in example.iterdir():
        if entry.name in ("reports", "__pycache__", ".pytest_cache"):
            continue
        target = pytester.path / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(entry, target)
    return pytester


@pytest.fixture
def project(pytester):
    return copy_example(pytester, EXAMPLE)


@pytest.fixture
def lm_project(pytester):
    return copy_example(pytester, EXAMPLES / "tiny-lm")


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
            " after 3 steps: gap * (needs <= 0.0001); the parameter that parted most: *; likely: the loss is not"
            " divided by k: does not hold*k=4, steps=3, batch=32, divide=False*"
        ]
    )
    claims = json.loads((project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims if c["id"] == "CNN-01"] == [("CNN-01", "fails")]


@pytest.mark.slow  # 10 s: a pytest run in a subprocess with two gloo ranks; CI also runs the example itself
def test_the_language_model_example_passes_its_gate_and_reports_only_its_own_family(lm_project):
    result = lm_project.runpytest_subprocess("-p", "no:cacheprovider", "--claims-baseline", "baselines/claims.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*trainclaims gate passed*", "claims: 5 compared, 0 changed, 0 missing"])
    claims = json.loads((lm_project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims] == [(f"LM-0{i}", "holds") for i in range(1, 6)]
    text = (lm_project.path / "reports" / "claims.md").read_text()
    assert "## LM: Training our tiny causal language model" in text
    assert "TP-01" not in text


@pytest.mark.slow  # 6 s of a pytest start in a subprocess; test_self_checks.py has the failure in the fast tier
def test_the_language_model_normalized_per_micro_batch_fails_with_the_checks_numbers(lm_project):
    test_file = lm_project.path / "tests" / "test_lm_claims.py"
    test_file.write_text(test_file.read_text().replace('normalize="tokens"', 'normalize="mean"'))
    result = lm_project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "token_normalized")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: token_accumulation: 2 micro-batches with each micro-batch's token mean / k equal one "
            "batch 2 times larger (its token mean) after 3 steps: gap 0.4* (needs <= 0.0001); the parameter that "
            "parted most: *; likely: each micro-batch is normalized by its own token count, not the step's: "
            "does not hold*"
            "normalize='mean', tokens_per_micro_batch=??61, 27?, ?70, 37?, ?77, 35??*"
        ]
    )
    claims = json.loads((lm_project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims if c["id"] == "LM-01"] == [("LM-01", "fails")]


@pytest.fixture
def hf_project(pytester):
    pytest.importorskip("transformers", reason="examples/hf-lm needs transformers: pip install 'trainclaims[hf]'")
    return copy_example(pytester, EXAMPLES / "hf-lm")


@pytest.mark.slow  # 15 s: a pytest run in a subprocess, Trainer included; CI also runs the example itself
def test_the_hugging_face_example_passes_its_gate_and_reports_only_its_own_family(hf_project):
    result = hf_project.runpytest_subprocess("-p", "no:cacheprovider", "--claims-baseline", "baselines/claims.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*trainclaims gate passed*", "claims: 5 compared, 0 changed, 0 missing"])
    claims = json.loads((hf_project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims] == [(f"HFLM-0{i}", "holds") for i in range(1, 6)]
    assert "HF-01" not in (hf_project.path / "reports" / "claims.md").read_text()


@pytest.mark.slow  # 8 s of a pytest start in a subprocess; test_self_loop.py has the broken loops in the fast tier
def test_the_hugging_face_loop_dividing_each_micro_batchs_mean_by_k_fails_naming_the_step_and_the_fix(hf_project):
    module = hf_project.path / "hflm.py"
    fixed = "        loss = model(**mb, num_items_in_batch=count).loss\n"
    assert fixed in module.read_text()
    module.write_text(module.read_text().replace(fixed, "        loss = model(**mb).loss / len(micro_batches)\n"))
    result = hf_project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "our_loop")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: training_loop: * step 1: each micro-batch's own mean / k *fix: divide each micro-batch's "
            "token sum by the step's token count (Hugging Face: num_items_in_batch)*"
        ]
    )
    claims = json.loads((hf_project.path / "reports" / "claims.json").read_text())["claims"]
    assert [(c["id"], c["verdict"]) for c in claims if c["id"] == "HFLM-01"] == [("HFLM-01", "fails")]
