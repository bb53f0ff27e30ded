"""Calibration and targets: measure a collection's settings, then serve a recall, latency or cost target."""

from .calibration import DEFAULT_TARGET, Calibration, Point
from .grid import settings

__all__ = ["Calibration", "DEFAULT_TARGET", "Point", "settings"]
