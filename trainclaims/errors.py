"""The two ways a check ends without a verdict on its claim: a usage error (:class:`Misuse`) and a
measurement that could not be made (:class:`NotMeasured`). A leaf module: the verdict rules
(:mod:`trainclaims.verdicts`, which re-exports both), the known-behaviour tables and the checks
import it."""

from __future__ import annotations

import unittest


class Misuse(ValueError):
    """A check was called in a way that cannot measure its claim (a k that does not divide a
    batch, a mean given where a sum is needed, one rank where ranks are compared): a usage error,
    raised before any work, with the fix. A trainclaims test that raises it reads *error*, never
    *fails*: nothing was said of the claim."""


class NotMeasured(unittest.SkipTest):
    """A check ran but what its verdict needs did not happen (a mode without a GradScaler for a
    claim about one): it measured nothing, and says why. pytest and unittest report it as a skip;
    the claim reads *not measured* with the reason."""


__all__ = ["Misuse", "NotMeasured"]
