"""Training engine: trainer and hooks, checkpoints, launch, and tool setup."""

from .checkpoint import (
    Checkpointer,
    CheckpointError,
    load_checkpoint_file,
    load_model_weights,
    load_state_dict_checked,
)
from .defaults import default_argument_parser, default_setup, resolve_device, setup_cfg
from .hooks import HookBase
from .inference import build_inference_model, gather_features, inference_on_datasets
from .launch import launch
from .trainer import DefaultTrainer, SimpleTrainer, TrainerBase, seed_all

__all__ = [
    "CheckpointError", "Checkpointer", "DefaultTrainer", "HookBase", "SimpleTrainer",
    "TrainerBase", "build_inference_model", "default_argument_parser", "default_setup",
    "gather_features", "inference_on_datasets", "launch", "load_checkpoint_file",
    "load_model_weights", "load_state_dict_checked", "resolve_device", "seed_all", "setup_cfg",
]
