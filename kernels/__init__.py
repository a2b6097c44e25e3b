"""Fused Triton kernels for the SAE hot path, with eager PyTorch references (see the kernels issue)."""

__all__: list[str] = []
