"""Configuration: yacs defaults with ``_BASE_`` inheritance and checked overrides."""

from .config import CfgNode, ConfigError, get_cfg, load_yaml_with_base, parse_kwargs

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base", "parse_kwargs"]
