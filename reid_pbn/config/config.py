"""Config loading: ``get_cfg``, ``_BASE_`` inheritance and helpful errors for bad keys."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yacs.config import CfgNode as _YacsCfgNode

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override is invalid; the message says what to change."""


def _all_keys(node: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, Mapping):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _suggest(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if not close:
        # Compare the last component too: a misspelt leaf under a valid parent.
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {v.rsplit(".", 1)[-1]: v for v in valid}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=3)]
    return f" Did you mean: {', '.join(close)}?" if close else ""


class CfgNode(_YacsCfgNode):
    """yacs ``CfgNode`` that follows ``_BASE_`` and names the closest keys on a typo."""

    def merge_from_file(self, cfg_filename: str) -> None:
        """Merge a YAML file, after the files it inherits from via ``_BASE_``.

        Args:
            cfg_filename: path of the YAML file. ``_BASE_`` paths are relative to it.

        Raises:
            ConfigError: the file is missing, unreadable, or has an unknown key or bad value.
        """
        loaded = load_yaml_with_base(cfg_filename)
        self._merge_checked(loaded, source=cfg_filename)

    def merge_from_list(self, cfg_list: list) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` overrides (the command line's trailing opts).

        Args:
            cfg_list: alternating full key names and values; values are parsed as Python
                literals where possible ("0.1" -> 0.1, "(1, 2)" -> tuple).

        Raises:
            ConfigError: odd length, unknown key or a value of the wrong type.
        """
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must be KEY VALUE pairs, got an odd number of items: {cfg_list}"
            )
        valid = _all_keys(self)
        for key in cfg_list[0::2]:
            if key not in valid:
                raise ConfigError(
                    f"Unknown config key '{key}' on the command line.{_suggest(key, valid)}"
                )
        try:
            super().merge_from_list(cfg_list)
        except ValueError as e:
            raise ConfigError(f"Bad command-line override: {e}") from e

    def _merge_checked(self, loaded: dict, source: str) -> None:
        valid = _all_keys(self)
        for key in _all_keys(loaded):
            if key not in valid and not any(key.startswith(v + ".") for v in valid
                                            if not isinstance(self._get(v), Mapping)):
                raise ConfigError(
                    f"Unknown config key '{key}' in {source}.{_suggest(key, valid)}"
                )
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except ValueError as e:
            raise ConfigError(f"Bad value in {source}: {e}") from e

    def _get(self, full_key: str) -> Any:
        node: Any = self
        for part in full_key.split("."):
            node = node[part]
        return node


def load_yaml_with_base(filename: str) -> dict:
    """Read a YAML config and recursively merge the files named by its ``_BASE_`` key.

    Args:
        filename: path of the YAML file.

    Returns:
        The merged mapping, without ``_BASE_``.

    Raises:
        ConfigError: a file is missing or is not a YAML mapping.
    """
    if not os.path.isfile(filename):
        raise ConfigError(f"Config file not found: {filename}")
    with open(filename, encoding="utf-8") as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{filename} is not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{filename} must hold a mapping of config keys, got {type(cfg).__name__}"
        )
    base = cfg.pop(BASE_KEY, None)
    if base is None:
        return cfg
    bases = [base] if isinstance(base, str) else list(base)
    merged: dict = {}
    for b in bases:
        path = b if os.path.isabs(b) else os.path.join(os.path.dirname(filename), b)
        _deep_update(merged, load_yaml_with_base(path))
    _deep_update(merged, cfg)
    return merged


def _deep_update(dst: dict, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def get_cfg() -> CfgNode:
    """Return a fresh copy of the default config (see ``reid_pbn/config/defaults.py``)."""
    from .defaults import _C

    return CfgNode(_C.clone())


def parse_kwargs(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``("key=value", ...)`` config entries into a kwargs dict of Python literals.

    Args:
        items: strings of the form ``key=value``; values are parsed with YAML rules
            (numbers, booleans, lists), anything else stays a string.

    Returns:
        The keyword arguments.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"Expected 'key=value', got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
