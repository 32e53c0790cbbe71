"""Self-test of the compare command: two small reports built by hand, one claim's verdict and one
op's derivative at 0 changed between them, a benchmark on another machine."""

import json
from pathlib import Path

import pytest

from trainclaims.compare import main


def write_run(folder: Path, torch: str, relu_at_zero: float, verdict: str, processor: str, samples: float) -> Path:
    folder.mkdir()
    env = {"torch": torch, "cuda": "12.1", "devices": {"cpu": "x86_64"}, "processor": processor, "numerics": {}}
    tests = [{"test": "s.py::test_zero[cpu-torch.float32]", "outcome": "passed", "reason": "", "device": "cpu"}]
    tests[0] |= {"verdict": None, "why": "", "evidence": {"dtype": "torch.float32", "device": "cpu"}}
    tests[0]["evidence"]["derivative_at_zero"] = {"F.relu": 0.0, "clamp(min=0)": relu_at_zero}
    claims = [
        {"id": "S001-02", "family": "S001", "statement": "...", "verdict": "holds", "why": "", "tests": tests},
        {
            "id": "S002-04",
            "family": "S002",
            "statement": "...",
            "verdict": verdict,
            "why": f"why {verdict}",
            "tests": [],
        },
    ]
    (folder / "claims.json").write_text(json.dumps({"environment": env, "claims": claims}))
    bench = {"fullname": "b.py::test_step[cpu]", "device": "cpu", "samples_per_s": samples, "device_name": "x86_64"}
    (folder / "benchmarks.json").write_text(json.dumps({"environment": env, "benchmarks": [bench]}))
    return folder


def test_the_compare_report_labels_runs_by_what_differs_and_flags_the_changes(tmp_path, capsys):
    old = write_run(tmp_path / "old", "2.1.2", 1.0, "holds", "EPYC", 1000.0)
    new = write_run(tmp_path / "new", "2.14.1", 0.0, "fails", "Xeon", 1500.0)
    assert main([str(old), str(new), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "| 1: **torch 2.1.2; machine EPYC** |" in text
    assert "| S002-04 | holds (0/0/0) | fails (0/0/0) **⚠** |" in text
    assert "| S001-02 | holds (1/0/0) | holds (1/0/0) |" in text
    assert "- run 2 (torch 2.14.1; machine Xeon): **fails** why fails" in text
    # clamp's 1 -> 0 is torch 2.14's documented change (trainclaims/known.py), not a finding
    known = "0 (*known*: torch >=2.14, the minimum-norm subgradient, as relu: pytorch/pytorch#184572, #184574)"
    assert f"| clamp(min=0) | 1 | {known} |" in text
    assert "| F.relu | 0 | 0 |" in text
    assert "| `test_step[cpu]` [cpu] | 1000 | 1500 (1.50x) (machine differs) |" in text
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_without_a_claims_report_is_a_one_line_error(tmp_path):
    run = write_run(tmp_path / "run", "2.1.2", 0.0, "holds", "EPYC", 1.0)
    with pytest.raises(SystemExit, match=r"trainclaims-compare: .*/empty/claims.json does not exist"):
        main([str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "out")])


def test_a_change_no_known_behaviour_explains_is_flagged(tmp_path):
    old = write_run(tmp_path / "old", "2.1.2", 1.0, "holds", "EPYC", 1000.0)
    odd = write_run(tmp_path / "odd", "2.14.1", 0.5, "holds", "EPYC", 1000.0)
    assert main([str(old), str(odd), "--out", str(tmp_path / "out")]) == 0
    assert "| clamp(min=0) | 1 | 0.5 **⚠** |" in (tmp_path / "out" / "compare.md").read_text()


def test_a_conftest_family_adds_its_compare_sections_with_family(tmp_path, monkeypatch, capsys):
    """A family declared in a project's conftest.py is not installed: ``--family conftest:FAMILY``,
    run from the project's folder, adds its sections; a reference that is not there, or is no
    Family, is a one-line usage error before anything is written."""
    old = write_run(tmp_path / "old", "2.1.2", 1.0, "holds", "EPYC", 1000.0)
    new = write_run(tmp_path / "new", "2.14.1", 1.0, "holds", "EPYC", 1000.0)
    project = tmp_path / "project"
    project.mkdir()
    (project / "myfamily_conftest.py").write_text(
        "from trainclaims.claims import Family\n"
        "def section(runs):\n"
        "    return ['## MINE: a section of my own', '', f'{len(runs)} runs', '']\n"
        "FAMILY = Family(id='MINE', title='mine', catalogue='MINE-01 | a claim', compare_sections=(section,))\n"
        "NOT_A_FAMILY = 3\n"
    )
    monkeypatch.chdir(project)
    assert main([str(old), str(new), "--out", "out", "--family", "myfamily_conftest:FAMILY"]) == 0
    text = (project / "out" / "compare.md").read_text()
    assert "## MINE: a section of my own\n\n2 runs\n" in text
    assert "## S001-02: derivative at exactly 0" in text, "the installed families' sections stay"
    for ref, why in (
        ("nowhere:FAMILY", "ModuleNotFoundError: No module named 'nowhere'"),
        ("myfamily_conftest:NOT_A_FAMILY", "int is not a trainclaims.claims.Family"),
        ("myfamily_conftest", "give MODULE:NAME"),
    ):
        with pytest.raises(SystemExit):
            main([str(old), str(new), "--out", "again", "--family", ref])
        assert why in capsys.readouterr().err
    assert not (project / "again").exists()
