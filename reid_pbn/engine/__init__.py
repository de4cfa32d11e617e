"""Training engine: trainer and hooks, checkpoints, launch, and tool setup."""

from .checkpoint import (
    Checkpointer,
    CheckpointError,
    file_sha256,
    load_checkpoint_file,
    load_model_weights,
    load_state_dict_checked,
)
from .defaults import (
    EVAL_DIR,
    add_weights_arguments,
    default_argument_parser,
    default_setup,
    evaluation_provenance,
    output_dir_of,
    resolve_device,
    setup_cfg,
)
from .hooks import HookBase
from .inference import build_inference_model, gather_features, inference_on_datasets
from .launch import ToolError, launch, tool_main, user_errors
from .trainer import DefaultTrainer, SimpleTrainer, TrainerBase, seed_all

__all__ = [
    "EVAL_DIR", "CheckpointError", "Checkpointer", "DefaultTrainer", "HookBase", "SimpleTrainer",
    "ToolError", "TrainerBase", "add_weights_arguments", "default_argument_parser",
    "build_inference_model", "default_setup", "evaluation_provenance", "gather_features",
    "inference_on_datasets", "file_sha256", "launch", "tool_main", "load_checkpoint_file",
    "load_model_weights", "load_state_dict_checked", "output_dir_of", "resolve_device",
    "seed_all", "setup_cfg", "user_errors",
]
