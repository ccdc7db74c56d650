"""Reading a user's text file (JSON, JSONL, CSV, YAML) as UTF-8, with one paragraph when it is not.

Files exported by older tools or edited on Windows are often Latin-1 / Windows-1252: Python's own
`UnicodeDecodeError` names neither the file nor the line. `read_utf8` names both, the offending byte and the
conversion that fixes it, and raises the caller's error type (a `DataError` for data, a `RecipeError` for a
config file) so each launcher prints it as its usual one paragraph with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from trainers.errors import UserFacingError


def read_utf8(path: str | Path, error: type[UserFacingError], key: str = "") -> str:
    """The file's text (a leading UTF-8 byte-order mark dropped); `error` naming file, line and byte when the
    bytes are not UTF-8. `key` is the recipe key or option that named the file, shown in the message."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        line_start = data.rfind(b"\n", 0, start) + 1
        line_end = data.find(b"\n", start) % (len(data) + 1)  # -1 (last line) -> the end
        column = start - line_start + 1
        byte = data[start]
        shown = data[max(line_start, start - 20) : min(line_end, start + 20)].decode("cp1252", "replace")
        context = f" (in {shown.strip()!r}, read as Windows-1252)" if shown.strip() else ""
        named = f" ({key})" if key else ""
        raise error(
            f"{path}:{line}: not UTF-8 text{named}: byte 0x{byte:02x} at column {column}{context} is not valid "
            f"UTF-8 ({exc.reason}). The file is probably Latin-1 or Windows-1252; save it as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 {path} > utf8-copy, and use the copy in its place."
        ) from None
