"""The mutation tier (trainclaims.mutants, trainclaims-mutants): PyTorch altered on purpose in a fresh
process, and the claims' tests seen to fail under it. Declarations and the patching helpers here;
the runner on a project of its own (a claim a mutant breaks, one it does not, one no mutant
names); and the suite's own TP-03 / TP-04 tests failing under a clip that scales nothing and one
that returns a rank's own norm (PyTorch altered, not the checks' arguments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from trainclaims import mutants
from trainclaims.claims import Family
from trainclaims.mutants import Mutant

pytestmark = pytest.mark.trainclaims
ROOT = Path(__file__).resolve().parents[1]


def _noop() -> None:
    pass


def test_a_mutant_is_named_after_what_it_breaks_and_names_its_claims():
    with pytest.raises(ValueError, match="lower-case"):
        Mutant("Clip Scales Nothing", ("TP-03",), "x", _noop)
    with pytest.raises(ValueError, match="names no claim"):
        Mutant("clip-scales-nothing", (), "x", _noop)
    with pytest.raises(ValueError, match="names claims not in it: ZZ-02"):
        Family("ZZ", "t", "ZZ-01 | a claim", mutants=(Mutant("m", ("ZZ-02",), "x", _noop),))


def test_two_families_declaring_one_alteration_make_one_mutant_naming_both_claims():
    a = Family("AA", "t", "AA-01 | a", mutants=(Mutant("m", ("AA-01",), "x", _noop),))
    b = Family("BB", "t", "BB-01 | b", mutants=(Mutant("m", ("BB-01",), "x", _noop),))
    assert mutants.all_of([a, b])["m"].claims == ("AA-01", "BB-01")
    other = Family("CC", "t", "CC-01 | c", mutants=(Mutant("m", ("CC-01",), "x", lambda: None),))
    with pytest.raises(ValueError, match="two different alterations"):
        mutants.all_of([a, other])
    guards = mutants.guards([a, Family("DD", "t", "DD-01 | d")])
    assert [m.name for m in guards["AA-01"]] == ["m"]
    assert guards["DD-01"] == []


def test_replace_rebinds_every_name_that_held_the_old_function_and_refuses_settings():
    owner = types.ModuleType("tc_owner")
    user = types.ModuleType("tc_user")

    def old():
        return "old"

    owner.fn = old
    user.fn = old  # as `from tc_owner import fn` leaves it
    sys.modules.update(tc_owner=owner, tc_user=user)
    try:
        assert mutants.replace(owner, "fn", lambda: "new") is old
        assert owner.fn() == "new"
        assert user.fn() == "new"
        owner.flag = False
        with pytest.raises(TypeError, match="set it"):
            mutants.replace(owner, "flag", True)
    finally:
        del sys.modules["tc_owner"], sys.modules["tc_user"]


def test_a_mutant_runs_only_where_the_markers_select_the_tests_that_can_notice_it():
    from trainclaims.mutation import selects

    distributed = ("distributed", "slow")
    assert not selects("not slow", distributed)
    assert selects("not slow", ())
    assert selects("distributed", distributed)
    assert selects("not slow or distributed", distributed)
    assert selects("(gpu or distributed) and not benchmark", distributed)
    with pytest.raises(ValueError, match="is no marker"):
        selects("slow; import os", ())


def test_every_shipped_claim_the_fast_tier_measures_has_a_mutant():
    from trainclaims.registry import installed

    guards = mutants.guards(installed())
    fast = [f"S000-0{i}" for i in (8, 9)] + [f"S001-0{i}" for i in range(1, 9)]
    fast += [f"S002-0{i}" for i in (1, 2, 3, 4, 6, 7, 8, 9)] + [f"TP-{i:02d}" for i in range(1, 15) if i not in (4, 13)]
    assert [c for c in fast if not guards[c]] == []


# --------------------------------------------------------------------------- the runner


PROJECT = {
    "conftest.py": """
        from trainclaims.claims import Family
        from trainclaims.mutants import Mutant, replace

        def relu_is_identity():
            import torch
            replace(torch, "relu", lambda x: x)

        def softmax_untouched():
            import torch
            replace(torch, "sigmoid", torch.sigmoid)  # an alteration that changes nothing

        FAMILY = Family(
            "ZZ",
            "A project's own claims",
            '''
            ZZ-01 | relu zeroes negative inputs.
            ZZ-02 | relu keeps positive inputs.
            ZZ-03 | two plus two is four.
            ''',
            mutants=(
                Mutant("relu-is-identity", ("ZZ-01", "ZZ-02"), "relu returns its input", relu_is_identity),
                Mutant("nothing-changes", ("ZZ-02",), "an alteration the tests cannot see", softmax_untouched),
            ),
        )

        def pytest_trainclaims_families():
            return [FAMILY]
    """,
    "test_zz.py": """
        import pytest
        import torch

        @pytest.mark.claim("ZZ-01")
        def test_relu_zeroes_negatives():
            assert torch.relu(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]

        @pytest.mark.claim("ZZ-02")
        def test_relu_keeps_positives():
            assert torch.relu(torch.tensor([3.0])).tolist() == [3.0]

        @pytest.mark.claim("ZZ-03")
        def test_arithmetic():
            assert 2 + 2 == 4
    """,
}


def _mutants(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != mutants.MUTANT_ENV}
    return subprocess.run(
        [sys.executable, "-m", "trainclaims.mutation", "--family", "conftest:FAMILY", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def project(tmp_path):
    for name, text in PROJECT.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.slow  # three pytest processes: about 15 s
def test_the_runner_tells_guarded_survived_and_unguarded_claims_and_fails_on_the_last_two(project):
    done = _mutants(project, "ZZ", "--out", "out")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((project / "out" / "mutants.json").read_text())
    claims = report["claims"]
    assert claims["ZZ-01"]["guard"] == "guarded"
    (killed,) = claims["ZZ-01"]["mutants"]
    assert killed["status"] == "killed"
    assert killed["test"].endswith("test_relu_zeroes_negatives")
    assert claims["ZZ-02"]["guard"] == "survived"
    assert {m["mutant"]: m["status"] for m in claims["ZZ-02"]["mutants"]} == {
        "relu-is-identity": "survived",
        "nothing-changes": "survived",
    }
    assert claims["ZZ-03"]["guard"] == "unguarded"
    text = (project / "out" / "mutants.md").read_text()
    assert "| ZZ-01 | guarded | relu-is-identity: killed |" in text
    assert "ZZ-03: unguarded" in done.stdout


@pytest.mark.slow  # a runner start each (it imports torch): about 10 s
def test_bad_input_stops_the_runner_in_one_line_before_any_run(project):
    for args, message in (
        (["ZZ-09"], "'ZZ-09' is no claim or family here"),
        (["--mutant", "no-such"], "no mutant no-such (known: "),
        (["-j", "0"], "-j needs 1 or more"),
    ):
        done = _mutants(project, *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().startswith(f"trainclaims-mutants: {message}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (project / "reports").exists()


@pytest.mark.slow
def test_list_prints_each_claims_mutants(project):
    done = _mutants(project, "--list", "ZZ")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ZZ-01: relu-is-identity",
        "ZZ-02: relu-is-identity, nothing-changes",
        "ZZ-03: unguarded",
    ]


@pytest.mark.slow
def test_an_unknown_mutant_in_the_environment_stops_pytest_before_any_test(project):
    env = {**os.environ, mutants.MUTANT_ENV: "no-such-mutant"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--claim=ZZ-01"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "TRAINCLAIMS_MUTANT=no-such-mutant: no family declares that mutant" in done.stdout + done.stderr


# --------------------------------------------------------------------------- the suite's own claims, PyTorch altered


def _suite(mutant: str | None, *tests: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != mutants.MUTANT_ENV}
    if mutant:
        env[mutants.MUTANT_ENV] = mutant
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--no-report", "-q", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


TP03 = "suites/test_tp_practice.py::test_clipping_after_unscale_sees_the_fp32_norm_and_before_it_the_scaled_one"
TP04 = "suites/test_tp_data_parallel.py::test_clip_grad_norm_over_fsdp2_shards_returns_the_global_norm"


@pytest.mark.slow  # a pytest process each: about 8 s
@pytest.mark.parametrize(
    ("mutant", "says"),
    [
        ("clip-scales-nothing", "clip_fn did not clip as clipping is defined"),
        ("unscale-leaves-gradients-scaled", "clipping_under_scaler"),
    ],
)
def test_tp03_fails_where_pytorch_clips_nothing_or_unscale_leaves_the_scale(mutant, says):
    from trainclaims.modes import get

    why = get("fp16-autocast").unsupported("cpu")
    if why:
        pytest.skip(why)
    done = _suite(mutant, f"{TP03}[cpu]")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 failed" in done.stdout, done.stdout[-2000:]
    assert says in done.stdout, done.stdout[-2000:]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mutant", "says"),
    [("clip-returns-the-local-norm", "fsdp_clip_norm"), ("clip-scales-nothing", "fsdp_clip_norm")],
)
def test_tp04_fails_where_pytorch_returns_a_ranks_own_norm_or_clips_nothing(mutant, says):
    from trainclaims.families import tp

    if not tp.FSDP2_ON_CPU.expected():
        pytest.skip(f"{tp.FSDP2_ON_CPU.what}: not on this torch")
    assert _suite(None, f"{TP04}[ieee]").returncode == 0
    done = _suite(mutant, f"{TP04}[ieee]")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 failed" in done.stdout, done.stdout[-2000:]
    assert says in done.stdout, done.stdout[-2000:]
