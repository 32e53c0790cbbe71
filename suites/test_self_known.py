"""Self-tests of the known behaviours per torch version (trainclaims/known.py): each torch is held
to its range's value, an unknown value fails naming both values and the range, and a torch past a
change says so."""

import pytest

from trainclaims import registry
from trainclaims.errors import NotMeasured
from trainclaims.families.s001.relu_ops import CLAMP_AT_ZERO
from trainclaims.known import CAPABILITIES, DEPRECATIONS, TABLES, Known, Range, base_version, gap_reason, known_gap


@pytest.mark.parametrize(
    ("version", "value"),
    [("2.1.2", 1.0), ("2.13.0", 1.0), ("2.14.0", 0.0), ("2.14.1+cu130", 0.0), ("2.15.0.dev20261101", 0.0)],
)
def test_each_torch_is_held_to_the_value_of_its_range(version, value):
    assert CLAMP_AT_ZERO.expected(version) == value
    assert CLAMP_AT_ZERO.check(value, version) is None


def test_a_value_off_the_table_fails_with_both_values_and_the_range():
    problem = CLAMP_AT_ZERO.check(0.5, "2.6.0")
    assert problem == (
        "clamp(min=0)'s derivative at exactly 0: 0.5 on torch 2.6.0, expected 1.0 for torch <2.14 "
        "(subgradient 1 at min and max since PyTorch 0.4, pytorch/pytorch#7049): an unknown change"
    )


def test_a_torch_past_a_change_says_which_change_and_where_it_is_documented():
    assert CLAMP_AT_ZERO.note("2.14.1+cu130") == (
        "known change in torch 2.14, was 1.0 before (the minimum-norm subgradient, as relu: "
        "pytorch/pytorch#184572, #184574)"
    )
    assert CLAMP_AT_ZERO.note("2.6.0") is None


def test_a_release_no_range_measured_reads_not_measured_never_a_neighbours_value():
    for version in ("2.16.0", "2.0.1"):
        with pytest.raises(NotMeasured, match=rf"no measurement for torch {version}: clamp\(min=0\)'s derivative"):
            CLAMP_AT_ZERO.expected(version)
        with pytest.raises(NotMeasured, match=r": 0\.5 here \(the table has torch 2\.1, .*2\.15"):
            CLAMP_AT_ZERO.check(0.5, version)
    gap = Known("x", (Range("<2.6", False, "a", ("2.1.2",)), Range(">=2.6", True, "b", ("2.6.0",))))
    with pytest.raises(NotMeasured, match=r"no measurement for torch 2\.3\.0"):
        gap.expected("2.3.0")
    assert gap.boundary_problems() == [
        "x: between <2.6 (measured up to 2.1) and >=2.6 (measured from 2.6) the releases in between were not run"
    ]
    with pytest.raises(ValueError, match=r"measured release.* 2\.7\.0 lie outside it"):
        Range("<2.6", False, "a", ("2.7.0",))


def _tables():
    tables = [c.known for c in CAPABILITIES] + [d.known for d in DEPRECATIONS] + list(TABLES)
    for family in registry.installed():
        tables += [c.known for c in family.capabilities] + list(family.known)
    return tables


@pytest.mark.parametrize("table", _tables(), ids=lambda t: t.what[:40])
def test_every_table_is_measured_on_the_releases_on_both_sides_of_each_boundary(table):
    assert table.boundary_problems() == []


def test_overlapping_ranges_are_an_error_and_local_versions_compare_as_their_release():
    bad = Known("x", (Range(">=2.1", 1, "a", ("2.1.0",)), Range(">=2.5", 2, "b", ("2.6.0",))))
    with pytest.raises(ValueError, match=r"overlap at torch 2\.6\.0"):
        bad.expected("2.6.0")
    assert str(base_version("2.14.1+cu130")) == "2.14.1"


# Capability gaps and deprecations: measured on the installed torch and held to the table (every
# torch line's tox environment runs these: torch 2.1 the "missing" and "no warning" ranges).


FAMILY_CAPABILITIES = tuple(c for family in registry.installed() for c in family.capabilities)


@pytest.mark.parametrize("cap", CAPABILITIES + FAMILY_CAPABILITIES, ids=lambda c: c.name)
def test_each_capability_is_present_exactly_where_the_table_says(cap):
    assert cap.known.check(cap.present()) is None


@pytest.mark.parametrize("old", DEPRECATIONS, ids=lambda d: d.name)
def test_each_deprecation_warns_exactly_where_the_table_says(old):
    assert old.known.check(old.warns()) is None


PROBED = tuple(t for t in (*TABLES, *(t for f in registry.installed() for t in f.known)) if t.probe is not None)


@pytest.mark.parametrize("table", PROBED, ids=lambda t: t.what[:40])
def test_each_probed_table_holds_its_value_on_this_torch(table):
    """A table a test consults before it runs (FSDP2 on CPU: where it says False the tests skip) is
    held to its probe here, on every torch this suite runs on."""
    assert table.check(table.probe()) is None


def test_an_error_is_matched_to_its_known_gap_and_an_unknown_one_to_none():
    gap = known_gap(RuntimeError("\"batch_norm\" not implemented for 'Half'"))
    assert gap is not None
    assert gap.name == "float16 batch_norm on CPU"
    assert known_gap(RuntimeError("\"bernoulli_scalar_cpu_\" not implemented for 'Half'")).name.startswith("float16 b")
    assert known_gap(RuntimeError("\"foo\" not implemented for 'Half'")) is None
    assert gap_reason(gap).startswith("a known gap: float16 batch_norm on CPU (torch >=2.2 has it: measured")
