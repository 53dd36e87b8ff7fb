"""Exceptions raised by the ``db`` package.

Bad input to a repository function (a naive datetime, a malformed checksum, an unknown state) is reported
with :class:`DBError`, whose message names the problem, before anything is written. A reference to a row
that does not exist (image, label, round, job) raises :class:`NotFoundError` (an API answers 404).
"""


class DBError(ValueError):
    """Invalid input to the database layer."""


class NotFoundError(DBError, LookupError):
    """A referenced row does not exist."""


class UnknownImageError(NotFoundError):
    """An image id that is not in the ``images`` table."""
