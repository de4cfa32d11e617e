"""Config loading: ``get_cfg``, ``_BASE_`` inheritance and helpful errors for bad keys."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yacs.config import CfgNode as _YacsCfgNode

from .defaults import _C

BASE_KEY = "_BASE_"
#: Largest config file read (bytes); real configs are a few KB.
MAX_CONFIG_BYTES = 1 << 20
#: The ``VERSION`` key that configs saved before it was dropped carry (ignored when read).
_OLD_FORMAT_VERSION = 1
#: Longest ``_BASE_`` chain followed.
MAX_BASE_DEPTH = 32


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
        if loaded.get("VERSION") == _OLD_FORMAT_VERSION:
            # config.yaml files of earlier runs carry the dropped, never read VERSION key.
            loaded = {k: v for k, v in loaded.items() if k != "VERSION"}
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


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``).

    An alias repeats a node by reference; nested aliases expand exponentially (a 2 KB
    "billion laughs" file becomes gigabytes once turned into Python objects). Configs never
    need them, so any alias is refused before it is expanded.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML alias '*{event.anchor}' at line {event.start_mark.line + 1}: aliases are "
                "not accepted in configs (they can expand without bound); write the values out")
        return super().compose_node(parent, index)


def safe_load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML with the safe loader, refusing aliases and documents over the size limit.

    Args:
        text: the YAML text.
        source: where it comes from, for messages.

    Returns:
        The parsed value.

    Raises:
        ConfigError: invalid YAML, an alias, or more than :data:`MAX_CONFIG_BYTES`.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is {len(text)} bytes; configs are limited to "
                          f"{MAX_CONFIG_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from e


def read_yaml_file(filename: str) -> Any:
    """Read a YAML file with :func:`safe_load_yaml`, checking its size before reading it.

    Args:
        filename: the file.

    Returns:
        The parsed value.

    Raises:
        ConfigError: missing, too large, unreadable, invalid YAML or with an alias.
    """
    if not os.path.isfile(filename):
        raise ConfigError(f"Config file not found: {filename}")
    size = os.path.getsize(filename)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{filename} is {size} bytes; configs are limited to "
                          f"{MAX_CONFIG_BYTES} bytes")
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read config {filename}: {e}") from e
    return safe_load_yaml(text, filename)


def load_yaml_with_base(filename: str, _chain: tuple[str, ...] = ()) -> dict:
    """Read a YAML config and recursively merge the files named by its ``_BASE_`` key.

    Args:
        filename: path of the YAML file.
        _chain: the files that led here (internal, to report cycles).

    Returns:
        The merged mapping, without ``_BASE_``.

    Raises:
        ConfigError: a file is missing, too large or not a YAML mapping, uses an alias, or
            the ``_BASE_`` chain loops or is deeper than :data:`MAX_BASE_DEPTH`.
    """
    real = os.path.realpath(filename)
    if real in _chain:
        loop = " -> ".join([*_chain[_chain.index(real):], real])
        raise ConfigError(f"_BASE_ cycle: {loop}")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"_BASE_ chain deeper than {MAX_BASE_DEPTH} files at {filename}")
    cfg = read_yaml_file(filename) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{filename} must hold a mapping of config keys, got {type(cfg).__name__}"
        )
    base = cfg.pop(BASE_KEY, None)
    if base is None:
        return cfg
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{filename}: {BASE_KEY} must be a file path or a list of them, "
                          f"got {base!r}")
    merged: dict = {}
    for b in bases:
        path = b if os.path.isabs(b) else os.path.join(os.path.dirname(filename), b)
        _deep_update(merged, load_yaml_with_base(path, (*_chain, real)))
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
        out[k.strip()] = safe_load_yaml(v, f"the value of '{k.strip()}'")
    return out
