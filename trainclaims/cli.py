"""What the console commands share: the description ``--help`` shows, read from a module's
docstring without its markup (``literal``, :func:`role`, ``::``), so that help reads as text."""

from __future__ import annotations

import re


def described(doc: str | None) -> str:
    """The first paragraph of ``doc`` as plain text for ``--help``."""
    first = (doc or "").strip().split("\n\n")[0]
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", first)
    return text.replace("``", "").replace("::", ":").replace("*", "")
