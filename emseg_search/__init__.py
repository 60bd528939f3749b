"""emseg-search: find the best segmentation model for particles in EM images, then use it.

Importing the package has no side effects; the command-line entry points (emseg_search.cli) set
up the offline environment.
"""

from __future__ import annotations

__version__ = "0.1.0"
