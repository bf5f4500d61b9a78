"""The web client's JavaScript modules as files: where they are, what each imports.

Read from the source text (nothing runs), for tests/test_structure.py (the
modules' shape) and tests/test_webclient.py (the server serves them all).
"""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "chateau" / "webclient" / "static"

# A module's static imports (import ... from "x", import "x", export ... from "x")
# and dynamic ones (import("x")), as written in the web client's modules.
_IMPORT = re.compile(
    r"""(?:\bimport\s*(?:[\w*{}\s,$]+?\s*from\s*)?|\bexport\s*[\w*{}\s,$]+?\s*from\s*|\bimport\s*\(\s*)"""
    r"""["']([^"']+)["']"""
)


def imports(source: str) -> list[str]:
    """The specifiers a module's source imports, in order."""
    return _IMPORT.findall(source)


def modules() -> dict[str, str]:
    """File name -> source, for every .js file the web client has."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(STATIC.glob("*.js"))}
