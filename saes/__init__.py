"""Sparse autoencoders trained on mechscope activation stores.

Importing ``saes`` needs only torch and safetensors (no TransformerLens), so the SAE and its trainer
also run where only a GPU stack is installed.
"""

from saes.activations import ACTIVATIONS, Activation, register_activation
from saes.config import DataConfig, SAEConfig, TrainConfig
from saes.gated import Gated
from saes.losses import LossOutput, sae_loss, step_loss
from saes.matryoshka import MatryoshkaBatchTopK
from saes.sae import HOOK_NAMES, NODE_HOOKS, SAE, SAELoadError, SAEOutput
from saes.trainer import NonFiniteLossError, Trainer
from saes.transcoder import Transcoder

__all__ = [
    "ACTIVATIONS",
    "HOOK_NAMES",
    "NODE_HOOKS",
    "SAE",
    "Activation",
    "DataConfig",
    "Gated",
    "LossOutput",
    "MatryoshkaBatchTopK",
    "NonFiniteLossError",
    "SAEConfig",
    "SAELoadError",
    "SAEOutput",
    "TrainConfig",
    "Trainer",
    "Transcoder",
    "register_activation",
    "sae_loss",
    "step_loss",
]
