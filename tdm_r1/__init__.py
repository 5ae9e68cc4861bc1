"""tdmbench: benchmark, evaluation harness and TDM-R1 trainer for few-step text-to-image models.

Import name ``tdm_r1``; command ``tdmbench``. Importing this package is cheap: it imports neither
torch nor any reward backend (see ``tdm_r1.registry`` for the lazy registries).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
