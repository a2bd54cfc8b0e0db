"""Exception types raised at neuface's public boundaries.

Every error a user can cause (bad file, wrong shape, missing asset) is a :class:`NeufaceError`, so the CLI can
report it as one clear line instead of a traceback.
"""


class NeufaceError(Exception):
    """Base class of all errors neuface raises on purpose."""


class ShapeError(NeufaceError, ValueError):
    """A tensor or array argument has the wrong shape, dtype or device."""


class ModelFormatError(NeufaceError, ValueError):
    """A model/asset file is missing keys, has wrong shapes or is not in the expected format."""


class UnsafePickleError(ModelFormatError):
    """A pickle asked for a class or function outside the allow-list; nothing from it was executed."""


class AssetMissingError(NeufaceError, FileNotFoundError):
    """A required asset file (FLAME model, embedding, weights) does not exist."""
