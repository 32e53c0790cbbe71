"""The GPU check's own machinery, on the CPU (``.ci/gpu-check``; no GPU is needed): its plan and
budgets, its one-line errors, the preflight of an image that lacks packages and a C compiler, the
environment it makes from .ci/wheels without an index, and a step past its time: interrupted with
SIGINT (pytest still writes its reports), then killed with the workers it left, the summary keeping
what finished. The steps here are the real ones where the CPU can run them and test steps
(``--test-plan``, a test-only option) where they need a GPU."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.trainclaims
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu-check"
ORDER = [
    "preflight",
    "install",
    "tf32-probe",
    "claims-ieee",
    "benchmarks",
    "claims-tf32",
    "claims-bf16-autocast",
    "claims-fp16-autocast",
    "claims-bf16-weights",
    "claims-compile",
    "nccl-job",
    "nccl-judge",
]
# what an image may lack (the fake image below has none of them): names of top-level entries of a
# site-packages folder (packages, modules and their .dist-info), compared with - and . as _
LACKS = ("torchvision", "hypothesis", "_hypothesis", "pytest", "_pytest", "pluggy", "iniconfig", "pip", "setuptools")
LACKS += ("_distutils_hack", "pkg_resources", "wheel", "trainclaims", "__editable__", "xdist", "execnet", "cpuinfo")


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a command started in a shell's background gets it


def gpu_check(*args: str, python: str = sys.executable, env: dict | None = None, timeout: float = 600):
    """The check run as on a runner that starts it with SIGINT ignored (a shell's background job):
    its interrupted steps must still get SIGINT."""
    return subprocess.run(
        [python, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_sigint_ignored,
    )


def the_check():
    """The script as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def planned(stdout: str) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """The dry run's steps: {name: budget}, {name: why not measured}, {name: command}."""
    budgets, skipped, commands = {}, {}, {}
    for line in stdout.splitlines():
        if m := re.match(r"^\[([\w-]+), at most (\d+) s\] (.*)$", line):
            budgets[m[1]], commands[m[1]] = int(m[2]), m[3]
        elif m := re.match(r"^\[([\w-]+): not measured: (.*)\]$", line):
            skipped[m[1]] = m[2]
    return budgets, skipped, commands


def fake_image(folder: Path) -> Path:
    """An image's Python with torch but none of LACKS: a virtual environment without the system's
    packages, seeing (a .pth) a folder of links to every entry beside torch but those."""
    packages = folder / "image-packages"
    packages.mkdir(parents=True)
    for entry in Path(torch.__file__).resolve().parents[1].iterdir():
        name = re.sub(r"[-.]", "_", entry.name.lower())
        if entry.suffix == ".pth" or any(name == n or name.startswith(n + "_") for n in LACKS):
            continue
        (packages / entry.name).symlink_to(entry)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder / "image")], check=True, timeout=120)
    python = folder / "image" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "image.pth").write_text(f"{packages}\n")
    return python


def image_env(image: Path) -> dict[str, str]:
    """The image's environment: its Python first on a PATH with no C compiler, a TF32 override set."""
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "PYTEST_XDIST_WORKER", "PYTHONPATH")}
    return env | {"PATH": str(image.parent), "NVIDIA_TF32_OVERRIDE": "1"}


# --------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("gpus", [1, 2])
def test_the_dry_run_plans_the_steps_most_valuable_first_within_the_deadline(gpus, tmp_path):
    run = gpu_check("--dry-run", f"--gpus={gpus}", "--deadline=480", f"--out={tmp_path / 'g'}")
    assert run.returncode == 0, run.stderr
    budgets, skipped, commands = planned(run.stdout)
    print(run.stdout)
    assert sum(budgets.values()) <= 480, budgets
    names = [n for n in ORDER if n in budgets or n in skipped]
    assert names == [line for line in re.findall(r"^\[([\w-]+)[,:]", run.stdout, re.M)]
    assert set(budgets) | set(skipped) >= set(ORDER) - {"claims-compile"}  # compile: where Triton can build
    assert not (tmp_path / "g").exists()
    claims = [c for n, c in commands.items() if n.startswith("claims-")]
    if gpus == 1:
        assert skipped["nccl-job"] == skipped["nccl-judge"] == "needs 2 GPUs (1 here)"
        assert all("-k 'not test_syncbatchnorm_equals_bn_over_the_global_batch'" in c for c in claims), claims
    else:
        assert "--nproc-per-node=2" in commands["nccl-job"]
        assert "-m 'distributed and not benchmark'" in commands["nccl-judge"]
        assert not any("syncbatchnorm" in c for c in claims), claims


@pytest.mark.slow  # 4 s: pytest collects the whole suite in a subprocess; CI runs it in the full run
def test_the_judge_step_leaves_out_the_two_rank_cpu_benchmark():
    """`-k "not throughput"` kept test_ddp_step_on_two_processes...: the judge ran a CPU benchmark."""
    check = the_check()
    judge = next(s for s in check.plan(Path("out"), ["ieee"], 2, {}, sys.executable, ROOT) if s.name == "nccl-judge")
    selection = [a for a in judge.argv[3:] if not a.startswith(("--ranks-results", "--report-dir", "--junitxml"))]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *selection, "--collect-only"], cwd=ROOT, capture_output=True, text=True
    )
    collected = [line for line in run.stdout.splitlines() if "::" in line]
    assert any("test_ddp_over_k_ranks" in t for t in collected), run.stdout
    assert not any("two_processes" in t or "raises" in t or "port" in t for t in collected), collected


def test_bash_and_python_both_run_it_and_the_summary_goes_to_OUT(tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "returned")}
    for runner in (["bash"], [shutil.which("python3") or sys.executable]):
        run = subprocess.run(
            [*runner, str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, (runner, run.stderr)
        assert f"summary {tmp_path / 'returned' / 'summary.md'}" in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deadline=5"], "--deadline 5: between 120 and 3600 seconds"),
        (["--numerics=ieee,fp8"], "--numerics ieee,fp8: unknown mode 'fp8'"),
        (["--out={file}"], "is a file, not a folder"),
    ],
    ids=["deadline", "numerics", "out"],
)
def test_bad_input_is_one_line_before_any_work(args, message, tmp_path):
    (tmp_path / "file").write_text("")
    args = [a.format(file=tmp_path / "file") for a in args]
    if not any(a.startswith("--out") for a in args):
        args.append(f"--out={tmp_path / 'g'}")
    run = gpu_check(*args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("gpu-check: "), run.stderr
    assert message in run.stderr, run.stderr
    assert run.stdout == ""
    assert not (tmp_path / "g").exists()


def test_the_requirements_it_installs_are_pyprojects_pure_python_ones():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ]", d)[0]: d.replace(" ", "") for d in deps}
    check = the_check()
    compiled = {"torch", *check.COMPILED}
    assert set(check.PURE_REQUIREMENTS) == {d for n, d in names.items() if n not in compiled}
    assert set(check.COMPILED) <= set(names)


# --------------------------------------------------------------------------- running


HANG = """
import os, signal, subprocess, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
folder.mkdir(parents=True)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
(folder / "pids").write_text(f"{os.getpid()} {worker.pid}")
signal.signal(signal.SIGINT, lambda *_: (folder / "interrupted").write_text("SIGINT"))
while True:
    time.sleep(1)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow  # 16 s: a step that hangs until its deadline; CI runs it in the full run
def test_a_step_past_its_time_is_interrupted_then_killed_with_its_workers_and_the_summary_keeps_what_finished(
    tmp_path,
):
    """The second step ignores SIGINT and leaves a worker in a session of its own (as torchrun's
    are): at the deadline both are killed; the summary has the first step's claims."""
    claims = {
        "schema": 1,
        "claims": [
            {
                "id": "S000-01",
                "verdict": "fails",
                "modes": {"ieee": {"verdict": "fails", "why": ""}},
                "tests": [
                    {
                        "test": "t.py::test_band",
                        "outcome": "failed",
                        "numerics": "ieee",
                        "reason": "AssertionError: test accuracy 50.00% outside its band [80%, 90%]",
                    }
                ],
            }
        ],
    }
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    (tmp_path / "hang.py").write_text(HANG)
    copy = "import os, shutil, sys; os.makedirs(sys.argv[2]); shutil.copy(sys.argv[1], sys.argv[2])"
    copy_argv = ["{python}", "-c", copy, str(tmp_path / "claims.json"), "{out}/claims-x"]
    steps = [
        {"name": "claims-x", "report": "claims-x", "weight": 1, "argv": copy_argv},
        {"name": "hang", "weight": 3, "argv": ["{python}", str(tmp_path / "hang.py"), "{out}/hang"]},
        {"name": "after", "weight": 1, "argv": ["{python}", "-c", "pass"]},
    ]
    (tmp_path / "plan.json").write_text(json.dumps({"steps": steps}))
    out = tmp_path / "out"
    run = gpu_check(f"--test-plan={tmp_path / 'plan.json'}", "--deadline=30", f"--out={out}")
    print(run.stdout, run.stderr)
    assert run.returncode == 1, run.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["infrastructure"]["steps"]}
    assert status["claims-x"] == "passed"
    assert status["hang"].startswith("timed out after"), status
    assert status["after"].startswith("not started:"), status
    assert (out / "hang" / "interrupted").read_text() == "SIGINT"  # SIGINT first
    assert [p for p in map(int, (out / "hang" / "pids").read_text().split()) if alive(p)] == []
    assert summary["claims"]["verdicts"] == {"S000-01": {"ieee": "fails"}}
    (miss,) = summary["claims"]["misses_of_cpu_measured_bounds"]
    assert "50.00% outside its band [80%, 90%]" in miss["line"]
    assert "measured on CPU" in miss["measured"]
    assert "50.00% outside its band" in (out / "summary.md").read_text()


def test_the_preflight_of_an_image_without_torchvision_hypothesis_or_a_compiler_names_what_it_does_without(
    tmp_path,
):
    image = fake_image(tmp_path)
    args = ["--preflight", f"--out={tmp_path / 'out'}", f"--wheels={tmp_path / 'no-wheels'}"]
    run = gpu_check(*args, python=str(image), env=image_env(image), timeout=300)
    print(run.stdout, run.stderr)
    assert run.returncode == (0 if torch.cuda.is_available() else 2), run.stderr
    infra = json.loads((tmp_path / "out" / "summary.json").read_text())["infrastructure"]
    skipped = {n["what"]: n["why"] for n in infra["not_measured"]}
    assert skipped["torchvision"].startswith("ModuleNotFoundError: No module named 'torchvision': the Fashion-MNIST")
    assert skipped["claims-compile"].startswith("no C compiler (CC unset; cc, gcc, clang not on PATH)")
    assert "suites/test_self_plugin.py" in skipped["modules that import torchvision"]  # not collected
    lacking = {n["what"]: n["why"] for n in infra["to_install"]}
    assert set(lacking) >= {"pytest", "hypothesis", "pytest-benchmark"}, lacking
    assert lacking["hypothesis"] == f"no hypothesis: not in {tmp_path / 'no-wheels'}: the run cannot start"
    assert infra["changed_for_the_run"][0].startswith("NVIDIA_TF32_OVERRIDE='1' was set: unset for the run")
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "**claims-compile**: no C compiler" in text


ENV_TESTS = """
import time
import hypothesis
import pytest


@pytest.mark.claim("S001-01")
def test_the_environment_has_what_the_image_lacked(evidence):
    evidence.record(hypothesis=hypothesis.__version__)


@pytest.mark.claim("S001-02")
def test_one_that_waits_for_the_deadline():
    time.sleep(3600)
"""


@pytest.mark.slow
def test_the_environment_is_made_without_an_index_for_an_image_without_pip_pytest_or_hypothesis(tmp_path):
    """The real install step, for the fake image, from wheels built here offline; then a pytest step
    in that environment, interrupted at its limit: its claims.json and JUnit are still written."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "build-wheels"), f"--out={wheels}"], capture_output=True, text=True
    )
    if built.returncode != 0:
        pytest.skip(f"the wheels could not be built offline from this Python's packages: {built.stderr.strip()}")
    image = fake_image(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\ntrainclaims_paths = .\n")
    (project / "test_env.py").write_text(textwrap.dedent(ENV_TESTS))
    argv = ["{env_python}", "-m", "pytest", "-p", "no:cacheprovider", "-q", str(project), "--rootdir", str(project)]
    argv += [
        "-c",
        str(project / "pytest.ini"),
        "--report-dir={out}/claims-env",
        "--junitxml={out}/claims-env/junit.xml",
    ]
    pytest_step = {"name": "claims-env", "report": "claims-env", "pytest": True, "limit": 30, "argv": argv}
    steps = [{"real": "install"}, pytest_step]
    (tmp_path / "plan.json").write_text(json.dumps({"steps": steps}))
    out = tmp_path / "out"
    args = [f"--test-plan={tmp_path / 'plan.json'}", "--deadline=400", f"--wheels={wheels}", f"--out={out}"]
    run = gpu_check(*args, python=str(image), env=image_env(image), timeout=600)
    print(run.stdout, run.stderr, (out / "install.log").read_text())
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["infrastructure"]["steps"]}
    assert status["install"] == "passed", status
    assert status["claims-env"].startswith("timed out after 30 s"), status
    installed = {line.split()[0] for line in summary["infrastructure"]["installed"]}
    assert {"pip", "pytest", "hypothesis", "pytest-benchmark", "trainclaims"} <= installed, installed
    assert (out / "claims-env" / "junit.xml").exists()
    assert summary["claims"]["verdicts"]["S001-01"] == {"ieee": "holds"}
    assert summary["claims"]["counts_per_mode"]["ieee"]["passed"] == 1
    environment = json.loads((out / "installed.json").read_text())["environment"]
    assert not Path(environment).exists(), "the run's environment is removed at its end"
