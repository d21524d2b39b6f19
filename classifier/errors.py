"""Errors and warnings that name what went wrong and where."""

from __future__ import annotations


class IotClassError(Exception):
    """Base class of the project's user-facing errors (printed as one line by the CLI)."""


class CaptureError(IotClassError):
    """A capture file cannot be read: names the file and the byte offset."""

    def __init__(self, source: str, offset: int | None, message: str):
        self.source = source
        self.offset = offset
        self.message = message
        where = f"{source}" if offset is None else f"{source}: byte {offset}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # raised in a worker process (--workers, --scheduler), re-raised in the command's
        return type(self), (self.source, self.offset, self.message)


class CaptureWarning(UserWarning):
    """A capture was read only in part (e.g. a truncated last record)."""

    def __init__(self, source: str, offset: int | None, message: str):
        self.source = source
        self.offset = offset
        self.message = message
        where = f"{source}" if offset is None else f"{source}: byte {offset}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        return type(self), (self.source, self.offset, self.message)
