"""Configuration: yacs defaults with ``_BASE_`` inheritance and checked overrides."""

from .config import (
    CfgNode,
    ConfigError,
    get_cfg,
    load_yaml_with_base,
    parse_kwargs,
    read_yaml_file,
    safe_load_yaml,
)

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base", "parse_kwargs",
           "read_yaml_file", "safe_load_yaml"]
