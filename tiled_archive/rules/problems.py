"""Problems and errors as data: a :class:`Problem` (a code from the table in :mod:`.codes`,
the member or path at fault, a message for this case, a hint when the code's own does not fit),
:class:`ArchiveError` (one problem, raised), and the helpers that keep archive text safe to show
(:func:`clip`, :func:`reason`, :func:`plural`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .codes import CODES, Severity


def reason(err: BaseException) -> str:
    """What a library's exception says, for a user: its message's first line (no exception
    class names, no traceback), at most 300 characters."""
    details = getattr(err, "errors", None)
    if callable(details):  # pydantic: the first failing field says more than the summary line
        try:
            first = details()[0]
            where = ".".join(str(part) for part in first["loc"])
            return clip(f"{where}: {first['msg']}" if where else str(first["msg"]))
        except (TypeError, LookupError, AttributeError):
            pass
    text = str(err).strip()
    if not text:
        return "the file's library could not read it"
    line = text.splitlines()[0]
    return clip(f"no entry {line}" if isinstance(err, KeyError) else line)


@dataclass(frozen=True)
class Problem:
    """One finding: a code from the table, the member or path at fault, a specific message,
    and a hint for this case when the code's own would not fit it (``fix`` gives either)."""

    code: str
    path: str | None
    message: str
    hint: str | None = field(default=None, compare=False)

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    @property
    def fix(self) -> str:
        return self.hint or CODES[self.code].hint

    def __str__(self) -> str:
        where = f" {clip(self.path)}:" if self.path else ""
        return f"{self.code}{where} {clip(self.message)} ({self.fix})"


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun`` for display: "1 error", "2 errors", "0 nodes"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


#: Characters a terminal acts on (C0 and C1 controls, DEL) or that reorder the text shown
#: around them (bidirectional overrides and isolates).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clip(text: str, limit: int = 300) -> str:
    """``text`` for display: unprintable characters as escapes (``\\x1b``: a name in an
    archive must not drive the terminal showing it), at most ``limit`` characters, the middle
    elided (paths and messages from an archive can be of any length)."""
    text = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


class ArchiveError(Exception):
    """An archive (or a request about one) breaks a rule of the format."""

    def __init__(self, code: str, path: str | None, message: str, hint: str | None = None):
        self.problem = Problem(code, path, message, hint)
        super().__init__(str(self.problem))

    @property
    def code(self) -> str:
        return self.problem.code
