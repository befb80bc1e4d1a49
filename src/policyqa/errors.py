"""The failures a user is shown: one line, and the exit code they end a command with.

Owns: the base class every user-facing error derives from (store, model, corpus, filter,
question file, bad input), and the translation of the two operating-system failures that
have a plain meaning for an index (a damaged database file, a full disk) into that family.
The CLI and chat catch `UserError` once each; messages name no command-line flags, so
that both can show them.
"""
from __future__ import annotations

import errno
import sqlite3

BAD_INPUT = 2
FAILURE = 1


class UserError(Exception):
    """A failure whose message is meant for the user; `exit_code` ends the command."""

    exit_code = FAILURE


class InputError(UserError):
    """Input that cannot be used as given."""

    exit_code = BAD_INPUT


class DamagedIndex(UserError):
    """An index file whose contents are not what was written."""


class DiskFull(UserError):
    """A write to the index failed for lack of space."""


def user_error(exc: BaseException) -> UserError | None:
    """`exc` as the user's error it stands for, or None when it is a bug."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        # malformed pages, "file is not a database": the file itself is damaged
        return DamagedIndex(f"the index database is damaged ({exc}); rebuild it with `policyqa index build`")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" for {exc.filename}" if exc.filename else ""
        return DiskFull(f"no space left on the disk{where}; free some space and run the command again")
    return None
