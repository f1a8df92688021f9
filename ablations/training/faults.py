"""Faults of the machine: a full disk, a read-only, vanished or unwritable folder stop a run resumable.

These are not faults of the arm, so a run they stop is never ``failed`` (final): it ends ``interrupted`` with
the path and the cause as its reason, where the run folder can still be written, and rerunning the same
command after the cause is fixed resumes it. ``MachineFault`` travels like a signal's ``RunInterrupted``
(the sweep worker puts the trial back in the queue and stops: every later trial would meet the same disk),
and the CLI prints it as one line and exits with 74 (``EX_IOERR`` of sysexits.h). Written by hand: neither
Lightning nor Optuna tells a full disk from a bad configuration.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from ablations.training.interrupts import RunInterrupted

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the file or its folder is gone",
    errno.ESTALE: "stale file handle (the shared file system lost it)",
    errno.EIO: "input/output error",
}
EX_IOERR = 74


class MachineFault(RunInterrupted):
    """The machine stopped the run (``CAUSES``); the message names the path and the cause."""

    def __init__(self, path: str | os.PathLike | None, cause: str) -> None:
        self.path = None if path is None else str(path)
        where = f"cannot write {self.path}" if self.path else "cannot write the run folder"
        super().__init__(signal.SIGTERM, f"{where}: {cause}")

    @property
    def exit_code(self) -> int:
        return EX_IOERR


def machine_fault(exc: BaseException, where: str | os.PathLike | None = None) -> MachineFault | None:
    """The ``MachineFault`` behind ``exc`` (itself, or an ``OSError`` with a cause in ``CAUSES``), else ``None``;
    ``where`` names the path when the error does not (a failed ``write`` has no file name)."""
    if isinstance(exc, MachineFault):
        return exc
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OSError) and e.errno in CAUSES:
            return MachineFault(e.filename or where, CAUSES[e.errno])
    return None


def write_error(path: str | os.PathLike, exc: BaseException) -> OSError:
    """An ``OSError`` naming ``path`` for a failed write; torch's writer raises a bare ``RuntimeError`` ("unexpected
    pos"), so a full file system is told from the free space left where the file was written."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return OSError(exc.errno, os.strerror(exc.errno), str(path))
    try:
        st = os.statvfs(Path(path).parent)
        code = errno.ENOSPC if st.f_bavail * st.f_frsize < 1 << 20 else errno.EIO
    except OSError as gone:
        code = gone.errno or errno.EIO
    return OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def written_whole(tmp: str | os.PathLike) -> Iterator[None]:
    """Around writing ``tmp`` (a file renamed into place after): a failure removes ``tmp`` and raises an
    ``OSError`` naming it, so no ``.part``/``.tmp`` file is left behind."""
    try:
        yield
    except BaseException as exc:
        error = write_error(tmp, exc) if isinstance(exc, (OSError, RuntimeError)) else None
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if error is None:
            raise
        raise error from exc
