"""The jobs' error kinds and the one-line form of any failure.

:class:`UserError` is a problem the user can fix (a bad option, a missing bucket, wrong credentials): the
``iqa`` wrapper prints its message, one line per problem, and exits 2 without a traceback. Any other
exception is a job failure: :func:`failure_line` turns it into one line (exit 1).
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)): (.+)$")


class UserError(ValueError):
    """A problem with the user's input or environment; the message says what was expected and the fix.

    A ``ValueError`` so that library callers who catch ``ValueError`` for bad arguments keep working.
    """


def failure_line(error: BaseException) -> str:
    """One line naming the failure and, for Ray errors wrapping a user error, its root cause (redacted)."""
    from ray_jobs.runtime import redact  # runtime imports this module

    text = _ANSI.sub("", str(error)).strip()
    lines = text.splitlines() or [""]
    causes = [m.group(0) for line in lines if (m := _ERROR_LINE.match(line.strip()))]
    head = f"{type(error).__name__}: {lines[0][:200]}"
    if causes and causes[-1] not in head:
        head = f"{type(error).__name__}: {causes[-1][:300]}"
    return redact(head)
