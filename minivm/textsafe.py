"""Text that minivm did not write (a guest's or a server's), made safe to show on a terminal.

Control characters (escape sequences, carriage returns, new lines), format characters (bidi
overrides) and bytes that are not text become visible escapes (``\\x1b``, ``\\u202e``), so a
message stays one honest line whatever a guest put in a file name or an error.
"""

from __future__ import annotations


def shown(text: str) -> str:
    """``text`` with everything but printable characters and plain spaces escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(ord(c)) for c in text)


def shown_bytes(data: bytes) -> str:
    """Bytes from a guest as text to show (UTF-8; other bytes escaped)."""
    return shown(data.decode(errors="surrogateescape"))


def _escape(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
