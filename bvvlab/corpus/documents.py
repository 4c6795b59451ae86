"""`Document`: one unit of text, the currency of every corpus source (a leaf module).

It lives here, not in `sources`, so that generators of documents (`concepts`, `instructions`)
and the readers of files and datasets (`sources`) import it from below instead of from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One unit of text with its language tag and provenance."""

    text: str  # the text (parallel documents: one line per language, English first)
    lang: str  # "en", "ru", "zh", or "en-ru" / "en-zh" for parallel text
    source: str  # corpus name, file path or "hf:..." it came from
    meta: dict[str, Any] = field(default_factory=dict)  # source-specific labels (ids, concepts, kind, split)
