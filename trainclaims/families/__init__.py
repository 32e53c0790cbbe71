"""The claim families shipped with trainclaims, one module each (its :class:`trainclaims.claims.Family`:
claims, and the report parts that draw what a run measured for them).

Each is plugged in through a ``pytest11`` entry point that names one of the light plugins below
(``trainclaims-s000 = "trainclaims.families:S000"``): it answers ``pytest_trainclaims_families``
and imports its family's module (and torch with it) only then, when a run asks for trainclaims,
so that a pytest start in an environment with trainclaims installed stays cheap. Leave a family
out of a run with ``-p no:trainclaims-s000``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest


class FamilyPlugin:
    """A pytest plugin that contributes the ``FAMILY`` of ``module``, imported when first asked."""

    def __init__(self, module: str) -> None:
        self.module = module

    @pytest.hookimpl(optionalhook=True)
    def pytest_trainclaims_families(self) -> list[Any]:
        return [importlib.import_module(self.module).FAMILY]

    def __repr__(self) -> str:
        return f"FamilyPlugin({self.module!r})"


S000 = FamilyPlugin("trainclaims.families.s000")
S001 = FamilyPlugin("trainclaims.families.s001")
S002 = FamilyPlugin("trainclaims.families.s002")
