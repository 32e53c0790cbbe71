"""What the known-behaviour tables measure on the installed torch: every capability and deprecation
table's probe (:mod:`trainclaims.known`) and every installed family's table that has one.
``python -m trainclaims.tables`` prints them as JSON: what ``trainclaims-releases`` reads in each
release's environment (a table without a probe is measured by the tests that record it)."""

from __future__ import annotations

import json
from typing import Any

from trainclaims.known import CAPABILITIES, DEPRECATIONS, TABLES
from trainclaims.registry import installed


def measure() -> dict[str, Any]:
    """{what: value} of every table with a probe, measured here."""
    capabilities = (*CAPABILITIES, *(c for family in installed() for c in family.capabilities))
    tables = [*TABLES, *(t for family in installed() for t in family.known if t.probe is not None)]
    measured = {c.name: c.present() for c in capabilities} | {d.name: d.warns() for d in DEPRECATIONS}
    return measured | {t.what: t.probe() for t in tables}


if __name__ == "__main__":
    print(json.dumps(measure()))
