"""`profile`: measure this machine (CPU, and an NVIDIA GPU through PyTorch when present)."""

from wattserve.profile.run import ProfileResult, run_profile

__all__ = ["ProfileResult", "run_profile"]
