"""trainclaims-bisect's answer (trainclaims/bisect.py): a first changed release only where every
release before it down to the last good one ran; else the range, with what could not be run; and
trainclaims-releases' table of releases."""

import pytest
from packaging.version import Version

from trainclaims import bisect, releases

pytestmark = pytest.mark.trainclaims

RELEASES = [Version(v) for v in ("2.11.0", "2.12.0", "2.12.1", "2.13.0", "2.14.0", "2.14.1")]


def test_the_first_release_that_differs_is_named_where_its_neighbour_ran():
    answer = bisect.conclusion(RELEASES, Version("2.13.0"), Version("2.14.0"), {Version("2.12.0"): "no wheel"})
    assert answer == "first release that differs: torch 2.14.0 (torch 2.13.0 behaves as the good release)"


def test_releases_that_could_not_be_run_between_make_the_answer_a_range():
    skipped = {Version("2.12.1"): "cannot be installed: no wheel", Version("2.14.0"): "cannot be installed: x"}
    answer = bisect.conclusion(RELEASES, Version("2.11.0"), Version("2.14.1"), skipped)
    assert answer == (
        "the change lies after torch 2.11.0 (behaves as the good release) and at or before torch 2.14.1 "
        "(differs): 2.12.1, 2.14.0 in between could not be run (cannot be installed: no wheel)"
    )


def test_a_full_disk_stops_the_bisection_instead_of_skipping_every_release(tmp_path, monkeypatch):
    class Done:
        returncode, stdout, stderr = (
            1,
            "",
            "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
        )

    monkeypatch.setattr(bisect.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(SystemExit, match=r"no space left on the device under .* while installing torch 2\.14\.0"):
        bisect.environment(Version("2.14.0"), tmp_path / "cache", tmp_path)


@pytest.mark.slow  # a pytest start: about 5 s
def test_an_unknown_claim_id_stops_before_any_environment_is_made(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cache = tmp_path / "cache"
    args = ["--good", "2.6.0", "--bad", "2.14.1", "ZZ-99", "--cache", str(cache), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "trainclaims.bisect", *args], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("trainclaims-bisect: the selection ZZ-99: --claim: unknown claim id ZZ-99 (known: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not cache.exists()
    assert done.stdout == ""


def test_moving_torch_installs_that_torch_with_the_torchvision_and_numpy_that_fit_it():
    assert bisect.requirements("torch", Version("2.2.2")) == ["torch===2.2.2", "torchvision", "numpy<2"]
    assert bisect.requirements("torch", Version("2.14.1"), ["transformers==4.45.2"]) == [
        "torch===2.14.1",
        "torchvision",
        "numpy",
        "transformers==4.45.2",
    ]


def test_moving_another_package_installs_that_release_and_the_pins_given_with_it():
    assert bisect.requirements("transformers", Version("4.46.0")) == ["transformers===4.46.0"]
    assert bisect.requirements("transformers", Version("4.40.2"), ["torch==2.1.2", "accelerate<1"]) == [
        "transformers===4.40.2",
        "torch===2.1.2",
        "torchvision",
        "numpy<2",
        "accelerate<1",
    ]
    answer = bisect.conclusion(
        [Version("4.45.2"), Version("4.46.0")], Version("4.45.2"), Version("4.46.0"), {}, "transformers"
    )
    assert answer == "first release that differs: transformers 4.46.0 (transformers 4.45.2 behaves as the good release)"


def test_a_release_whose_table_probes_fail_says_why_in_the_releases_table(tmp_path):
    failing = tmp_path / "python"
    failing.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'ImportError: no torch' >&2\nexit 1\n"
    )
    failing.chmod(0o755)
    values, why = releases.probe_tables(failing)
    assert values == {}
    assert why == "table probes failed: ImportError: no torch"
    results = {
        "command": "trainclaims-releases --releases 2.8",
        "markers": "not slow",
        "releases": {"2.8.0": {"ran": True, "claims": {}, "tables": {"a table": "—"}, "why": why, "tally": "1 passed"}},
    }
    text = releases.markdown(results)
    assert "| a table | — |" in text  # not "\u2014"
    assert "| 2.8.0 |  | 1 passed (0 s) |  | table probes failed: ImportError: no torch |" in text


def test_the_table_probes_json_is_read_past_what_gloo_prints_before_it(tmp_path):
    chatty = tmp_path / "python"
    chatty.write_text("#!/bin/sh\necho '[Gloo] Rank 0 is connected to 0 peer ranks.'\necho '{\"a table\": true}'\n")
    chatty.chmod(0o755)
    assert releases.probe_tables(chatty) == ({"a table": True}, "")
