"""The family registry: how the core reaches the claim families.

An installed family registers one way: an entry point in the ``trainclaims.families`` group that
names its :class:`trainclaims.claims.Family` (``s001 = "trainclaims.families.s001:FAMILY"``). The
plugin, ``trainclaims-compare``, ``trainclaims-history``, the launcher and the training engine find
it here. A project's own family, not installed, is declared in its ``conftest.py`` (the
``pytest_trainclaims_families`` hook: the plugin adds what conftests answer) and is named to the
tools that run outside pytest as ``MODULE:NAME`` (:func:`load`: ``--family conftest:FAMILY``).

What the core asks of the families goes through this module: the catalogue (:func:`installed`) and
the rank experiments a launched job runs (:func:`experiments`). No core module imports a family
module; the plugin registers the pytest plugins families name (``Family.plugin``) by name.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainclaims.claims import Family
    from trainclaims.modes import Mode
    from trainclaims.ranks import Experiment

GROUP = "trainclaims.families"


@functools.cache
def installed() -> tuple[Family, ...]:
    """Every family registered in the ``trainclaims.families`` entry-point group, by entry name
    (loaded once per process: a family's module imports torch). An entry that is no Family is an
    error naming it."""
    from trainclaims.claims import Family

    found = []
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        family = entry.load()
        if not isinstance(family, Family):
            raise TypeError(f"{GROUP} entry point {entry.name} = {entry.value} is a {type(family).__name__}, no Family")
        found.append(family)
    return tuple(found)


def load(ref: str) -> Family:
    """The family ``MODULE:NAME`` names (``conftest:FAMILY`` in a project's folder: the current
    folder is searched first). ValueError (one line) where it cannot be imported or is no Family."""
    from trainclaims.claims import Family

    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"--family {ref!r}: give MODULE:NAME, e.g. conftest:FAMILY")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        family = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--family {ref}: {type(err).__name__}: {err}") from None
    if not isinstance(family, Family):
        raise ValueError(f"--family {ref}: {type(family).__name__} is not a trainclaims.claims.Family")
    return family


def with_extra(extra: Iterable[Family] = ()) -> list[Family]:
    """The installed families, then ``extra`` ones (a project's; one with an installed family's id
    is that family: taken once)."""
    families = list(installed())
    ids = {f.id for f in families}
    return families + [f for f in extra if f.id not in ids]


def experiments(
    modes: Sequence[Mode], device: str = "cpu", families: Iterable[Family] | None = None
) -> list[Experiment]:
    """Every rank experiment the families' data-parallel tests make in these numerics modes, each
    with its id (what a launched job runs on its ranks and writes its results under:
    trainclaims.launch)."""
    chosen = installed() if families is None else families
    return [e for family in chosen if family.rank_plan is not None for e in family.rank_plan(tuple(modes), device)]
