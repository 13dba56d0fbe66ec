"""Free text from callers (references, descriptions, reasons, names): refused when it holds
characters that change how a terminal, a log viewer or a spreadsheet shows the text around it.

Refused: the C0 controls (NUL, ESC, CR, LF, TAB...), DEL and the C1 controls (U+0080-U+009F),
the line and paragraph separators (U+2028, U+2029), and the bidirectional embeddings,
overrides and isolates (U+202A-U+202E, U+2066-U+2069), which can make a reference read
backwards. Text stored before this check is escaped wherever it is shown (`escaped`).
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidInput

BIDI_CONTROLS = frozenset(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
SEPARATORS = frozenset({"\u2028", "\u2029"})


def is_unsafe(ch: str) -> bool:
    """A control character (Unicode category Cc: C0, DEL, C1), a bidi control or a separator."""
    return unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS or ch in SEPARATORS


def check_free_text(field: str, value: str | None) -> str | None:
    """`value` unchanged, or InvalidInput naming `field` and the first offending character."""
    if value is None:
        return None
    for position, ch in enumerate(value):
        if is_unsafe(ch):
            raise InvalidInput(
                field,
                f"{field} must not contain control or bidirectional formatting characters "
                f"(U+{ord(ch):04X} at position {position})",
            )
    return value


def escaped(value: str) -> str:
    """`value` with every character `check_free_text` refuses shown as a `\\u` escape, for
    printing text that was stored before the check existed."""
    if not any(is_unsafe(ch) for ch in value):
        return value
    return "".join(f"\\u{ord(ch):04x}" if is_unsafe(ch) else ch for ch in value)
