"""Reading the text of packaged corpora (VADER, BBC News)."""

import html
from pathlib import Path


def read_text(path: Path) -> str:
    """A packaged corpus file: UTF-8 (BOM tolerated); a file that is not falls back to
    Windows-1252, the usual encoding of older English corpora (one BBC article is), then
    Latin-1. (Local files use task.encoding and are never guessed.)"""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def unescape(text: str) -> str:
    """Undo HTML escaping ('&amp;', BBC's '&#233;'); some VADER lines are escaped twice."""
    while (unescaped := html.unescape(text)) != text:  # ends: every replacement shortens
        text = unescaped
    return text
