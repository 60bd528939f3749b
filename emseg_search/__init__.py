"""emseg-search: find the best segmentation model for particles in EM images, then use it."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Offline by default: albumentations otherwise asks PyPI for its latest version on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
