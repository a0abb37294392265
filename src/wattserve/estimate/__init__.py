"""`estimate`: how fast, how power-hungry and how costly is model M on device D."""

from wattserve.estimate.api import Estimate, estimate

__all__ = ["Estimate", "estimate"]
