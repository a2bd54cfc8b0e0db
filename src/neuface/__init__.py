"""neuface: spatio-temporally consistent FLAME annotations of face videos (NeuFace optimization)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neuface")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
