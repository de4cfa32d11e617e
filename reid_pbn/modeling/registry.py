"""A minimal name -> object registry shared by the modeling families.

Each family (meta-architectures, backbones, heads, losses) owns one ``Registry``; its docstring
says what a registered object must provide. Config files name the registered objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """Maps names to classes or builder functions.

    Args:
        name: the family's name, used in error messages.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator that registers an object under ``name`` (default: its ``__name__``).

        Args:
            name: the registry key; a second registration of the same key is an error.

        Returns:
            The decorator, which returns the object unchanged.
        """

        def deco(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._obj_map:
                raise KeyError(f"'{key}' is already registered in the {self._name} registry")
            self._obj_map[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        """Return the object registered under ``name``.

        Args:
            name: the registry key.

        Raises:
            KeyError: when nothing is registered under ``name``; the message lists the names.
        """
        if name not in self._obj_map:
            raise KeyError(
                f"No {self._name} named '{name}'. Available: {', '.join(sorted(self._obj_map))}"
            )
        return self._obj_map[name]

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._obj_map)

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {self.names()})"
