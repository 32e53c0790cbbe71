"""Self-tests of the known behaviours per torch version (trainclaims/known.py): each torch is held
to its range's value, an unknown value fails naming both values and the range, and a torch past a
change says so."""

import pytest

from trainclaims.families.relu_ops import CLAMP_AT_ZERO
from trainclaims.known import Known, Range, base_version


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


def test_overlapping_ranges_are_an_error_and_local_versions_compare_as_their_release():
    bad = Known("x", (Range(">=2.1", 1, "a"), Range(">=2.5", 2, "b")))
    with pytest.raises(ValueError, match=r"overlap at torch 2\.6\.0"):
        bad.expected("2.6.0")
    assert str(base_version("2.14.1+cu130")) == "2.14.1"
