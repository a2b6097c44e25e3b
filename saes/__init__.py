"""Sparse autoencoders trained on mechscope activation stores (see the SAE trainer issue)."""

__all__: list[str] = []
