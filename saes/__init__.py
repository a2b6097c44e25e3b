"""Sparse autoencoders trained on mechscope activation stores.

Importing ``saes`` needs only torch and safetensors (no TransformerLens), so the SAE and its trainer
also run where only a GPU stack is installed.
"""

from saes.activations import ACTIVATIONS, register_activation
from saes.config import DataConfig, SAEConfig, TrainConfig
from saes.losses import LossOutput, sae_loss
from saes.sae import SAE, SAELoadError, SAEOutput
from saes.trainer import NonFiniteLossError, Trainer

__all__ = [
    "ACTIVATIONS",
    "SAE",
    "DataConfig",
    "LossOutput",
    "NonFiniteLossError",
    "SAEConfig",
    "SAELoadError",
    "SAEOutput",
    "TrainConfig",
    "Trainer",
    "register_activation",
    "sae_loss",
]
