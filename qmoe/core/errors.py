"""Errors the engine raises for bad input: one family, so callers (CLI, app) can show the message."""


class QmoeError(ValueError):
    """Base class: the message is meant for the user, as is."""


class AudioError(QmoeError):
    """The audio cannot be used: empty, truncated, not audio, silent, too long, NaN/inf."""


class ConfigError(QmoeError):
    """An unknown name or an invalid setting (variant, bits, alpha, task, protocol...)."""


class CacheError(QmoeError):
    """A cache entry is unreadable; it is quarantined, never silently used."""


class DataError(QmoeError):
    """A dataset is missing, incomplete or has unknown labels."""
