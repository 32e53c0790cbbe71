"""The mutation tier: PyTorch's behaviours altered on purpose, to show that a claim's tests can fail.

A claim whose tests pass says little until they are seen to fail where what the claim states is
false. A :class:`Mutant` is one such alteration, named after what it breaks: a patch of PyTorch
(``clip_grad_norm_`` that returns the norm and scales nothing, a BatchNorm that normalizes with the
batch in eval, an Adam whose weight decay is AdamW's), applied in a fresh process before the claim's
tests run, never to the tests' own arguments. A family declares its mutants
(``Family(mutants=...)``), each naming the claims whose tests must notice it; a claim is *guarded*
where the tests of each mutant that names it fail, *unguarded* where none names it.

``TRAINCLAIMS_MUTANT=NAME`` in a process's environment applies the mutant of that name there: the
pytest plugin does so before the conftests and the test modules are imported; every rank a
data-parallel check spawns gets its parent's mutant (:func:`adopt`), and a launched job's ranks
apply it from the environment (:func:`activate_from_env`). The runner,
``trainclaims-mutants`` (:mod:`trainclaims.mutation`), runs each mutant's claims that way and
writes claim x mutant -> the test that failed, or "survived".

The patching helpers here (:func:`replace`, :func:`wrap`) alter PyTorch in the running process
only: a mutant is meant for a process of its own, and nothing restores it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MUTANT_ENV = "TRAINCLAIMS_MUTANT"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Mutant:
    """One alteration of PyTorch: ``name`` (lower case, dashes: what it breaks, e.g.
    ``clip-scales-nothing``), the ``claims`` whose tests must fail under it, what it ``breaks`` in
    words, and ``apply``: a function that patches PyTorch in this process (imports torch itself).
    ``marks``: the markers of the tests that can notice it (``("distributed", "slow")`` for an
    alteration of DDP): a run whose ``-m`` leaves those tests out does not run it."""

    name: str
    claims: tuple[str, ...]
    breaks: str
    apply: Callable[[], None]
    marks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"mutant name {self.name!r}: lower-case letters, digits and dashes (what it breaks)")
        if not self.claims:
            raise ValueError(f"mutant {self.name}: names no claim whose tests must notice it")


def all_of(families: Iterable[Any]) -> dict[str, Mutant]:
    """Every mutant the families declare, by name. Two families may declare one alteration (the
    same ``apply``) under one name, each naming its own claims: it is one mutant naming both's.
    ValueError where two different alterations share a name."""
    found: dict[str, Mutant] = {}
    for family in families:
        for mutant in getattr(family, "mutants", ()):
            seen = found.get(mutant.name)
            if seen is None:
                found[mutant.name] = mutant
            elif seen.apply is not mutant.apply:
                raise ValueError(f"two different alterations are named {mutant.name!r}")
            else:
                claims = tuple(dict.fromkeys((*seen.claims, *mutant.claims)))
                found[mutant.name] = Mutant(seen.name, claims, seen.breaks, seen.apply, seen.marks)
    return found


def guards(families: Iterable[Any]) -> dict[str, list[Mutant]]:
    """Claim id -> the mutants that name it (empty for an unguarded claim), for every claim."""
    families = list(families)
    out: dict[str, list[Mutant]] = {cid: [] for f in families for cid in f.claims}
    for mutant in all_of(families).values():
        for cid in mutant.claims:
            out[cid].append(mutant)
    return out


_active: Mutant | None = None


def active() -> Mutant | None:
    """The mutant applied in this process, or None."""
    return _active


def requested() -> str | None:
    """The mutant this process's environment asks for (``TRAINCLAIMS_MUTANT``), or None."""
    return os.environ.get(MUTANT_ENV) or None


def activate(name: str, families: Iterable[Any]) -> Mutant:
    """Apply the mutant ``name`` of ``families`` in this process (once: a second call for the same
    name does nothing); ValueError (one line, naming the known ones) where none has that name."""
    global _active
    if _active is not None:
        if _active.name != name:
            raise RuntimeError(f"mutant {_active.name} is applied in this process; {name} cannot be added to it")
        return _active
    known = all_of(families)
    if name not in known:
        raise ValueError(f"{MUTANT_ENV}={name}: no family declares that mutant (known: {', '.join(sorted(known))})")
    known[name].apply()
    _active = known[name]
    return _active


def activate_from_env(families: Iterable[Any]) -> Mutant | None:
    """Apply the mutant the environment asks for, from ``families`` (a launched job's rank: it
    inherits its launcher's environment), or do nothing."""
    name = requested()
    return activate(name, families) if name else None


def adopt(mutant: Mutant | None) -> None:
    """Apply in this process the mutant its parent process applied (a rank the library spawned
    gets it as an argument: its ``apply`` travels by reference, a module-level function)."""
    global _active
    if mutant is not None and _active is None:
        mutant.apply()
        _active = mutant


# --------------------------------------------------------------------------- patching PyTorch


def replace(owner: Any, attr: str, new: Any) -> Any:
    """``owner.attr = new``, and every module-level name of the loaded modules that holds the old
    value held ``new`` from now on (``from torch.utils.checkpoint import checkpoint`` made before
    the patch sees it too). Returns the old value."""
    old = getattr(owner, attr)
    if not callable(old):  # rebinding every name that holds False or 0 would alter everything
        raise TypeError(f"replace() rebinds functions and classes; {attr} is a {type(old).__name__}: set it")
    setattr(owner, attr, new)
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or module is owner:
            continue
        for key, value in list(namespace.items()):
            if value is old:
                namespace[key] = new
    return old


def wrap(owner: Any, attr: str, make: Callable[[Any], Any]) -> Any:
    """Replace ``owner.attr`` by ``make(old)`` (:func:`replace`); returns the old value."""
    return replace(owner, attr, make(getattr(owner, attr)))
