"""Surrogate models of the target over the candidates' inputs (exposed as botorch Models)."""

from .dkl import DeepKernelGP, DKLSurrogate

__all__ = ["DeepKernelGP", "DKLSurrogate"]
