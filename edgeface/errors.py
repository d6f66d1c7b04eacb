"""Exceptions raised by edgeface, in one hierarchy.

Every error a user can cause (a bad photo, a bad config, a model that does not
match its manifest) derives from :class:`EdgefaceError`. The command line
prints such errors and exits without a traceback, and callers can catch
exactly the failure they handle.
"""

from __future__ import annotations


class EdgefaceError(Exception):
    """Base class for every error edgeface raises on purpose."""


class ConfigError(EdgefaceError):
    """The configuration file or a command-line override is invalid."""


class ImageError(EdgefaceError):
    """An image file is missing, unreadable, truncated, too large or not an image."""


class ModelError(EdgefaceError):
    """A model file or its manifest is missing, invalid or inconsistent."""


class UntrainedModelError(ModelError):
    """The model carries random weights and was not explicitly allowed."""


class DetectorError(EdgefaceError):
    """A face detector backend cannot be created or failed to run."""


class GalleryError(EdgefaceError):
    """A gallery is missing, corrupt, or was built with a different model."""


class ModelMismatchError(GalleryError):
    """The gallery's vectors come from a different model than the one in use."""


class EventLogError(EdgefaceError):
    """The event log database cannot be created, opened or read."""
