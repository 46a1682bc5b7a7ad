"""The project's exception tree.  Driver errors are translated once, at the edge."""


class NexusError(Exception):
    """Base class of every error nexus raises on purpose."""


class ConfigError(NexusError):
    """A setting in the environment is missing or malformed.  The message names the variable."""


class DatabaseUnavailable(NexusError):
    """PostgreSQL did not answer in time (down, restarting, too many connections)."""


class DatabaseError(NexusError):
    """A statement failed.  The message carries the SQLSTATE and PostgreSQL's primary message
    only -- never the statement's parameters or the failing row -- so it can be logged and
    kept in broker history without copying personal data."""


class IntegrityError(DatabaseError):
    """A statement violated a constraint (unique key, foreign key, check, not null)."""


class MigrationError(NexusError):
    """A migration file could not be applied; the message names the file."""


class ExtractionError(NexusError):
    """Prospect extraction failed.

    ``reason`` is a short, fixed phrase for the row and the metrics (``"refusal"``,
    ``"http 401"``); ``calls`` the usage of each LLM call made before failing (see
    :attr:`nexus.extraction.base.ExtractionResult.calls`), so failed calls are paid for visibly.
    """

    def __init__(self, message: str, *, reason: str | None = None, calls=()):
        super().__init__(message)
        self.reason = reason or message
        self.calls = tuple(calls)


class RetryableExtractionError(ExtractionError):
    """A transient failure (rate limit, overload, 5xx, timeout, connection): try again later."""


class PermanentExtractionError(ExtractionError):
    """A failure that another attempt will not fix (bad request, output invalid twice)."""
