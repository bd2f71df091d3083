"""The one exception hierarchy of the kiosk package."""

from __future__ import annotations


class KioskError(Exception):
    "Base class for every error raised by the kiosk package"


class ConfigError(KioskError, ValueError):
    "The configuration file is missing, unreadable or invalid"

    def __init__(self, problems: list[str] | str, *, path: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.path = path
        super().__init__("\n".join(self.problems))


class ClockError(KioskError, ValueError):
    "A clock was asked for something it cannot do (e.g. a non-positive speed)"


class SensorError(KioskError, OSError):
    "A sensor could not be set up or read"


class StorageError(KioskError, OSError):
    "The local database could not be opened, migrated or written"


class DiskFullError(StorageError):
    "A write to the local database failed for lack of disk space"


class UploadError(KioskError, IOError):
    "An upload to the statistics server failed"


class ExportError(KioskError, ValueError):
    "An export or report was asked for with invalid arguments"


class UsageError(ExportError):
    "A date, time or other value given on the command line cannot be read (exit status 2)"


class AnnotationError(KioskError, ValueError):
    "An annotation was asked for with invalid arguments, or does not exist"


class ImportFileError(KioskError, ValueError):
    "An import file has bad rows, or conflicts with the database; nothing was imported"


class TokenFileError(UploadError):
    "The upload token file is missing, unsafe, or holds a token that cannot be sent"

    def __init__(self, message: str, *, missing: bool = False, unreadable: bool = False) -> None:
        self.missing = missing  #: the file does not exist (yet)
        self.unreadable = unreadable  #: this user may not read it
        super().__init__(message)


class ReceiverError(KioskError, OSError):
    "The reference receiver could not start (its port is in use, or may not be bound)"


class WebError(KioskError, ValueError):
    "The dashboard (kiosk web) cannot start as configured, or its password cannot be set"
