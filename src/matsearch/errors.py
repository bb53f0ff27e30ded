"""Exceptions raised by matsearch; every message names the offending value."""


class MatsearchError(Exception):
    """Base class for all errors matsearch raises on purpose."""


class InvalidInputError(MatsearchError, ValueError):
    """A vector, query, plan or parameter the caller passed is not acceptable."""


class CollectionError(MatsearchError):
    """A collection on disk is missing, corrupt, locked or otherwise unusable."""
