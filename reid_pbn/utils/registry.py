"""The one name -> object registry every family of choices uses.

A family (backbones, heads, losses, norms, data sets, samplers, poolings, classifiers,
optimizers, BNE combiners, ...) owns one :class:`Registry`. A config file or a keyword argument
names a registered object; the registry resolves the name with the same rules everywhere: a
name is taken once, and an unknown name is an error that lists the registered names and the
close matches.

What a registered object must provide depends on its family; each family's registry says it in
its ``doc`` (shown by ``help()`` and in error messages' context):

- backbones (``BACKBONE_REGISTRY``): ``fn(cfg, *, num_domains) -> nn.Module`` with
  ``out_channels``; its forward returns the last feature map.
- heads (``HEAD_REGISTRY``): a class with ``from_config(cfg, in_channels, num_classes)``.
- losses (``LOSS_REGISTRY``): an ``nn.Module`` class with ``from_config(cfg)`` and a ``key``.
- meta-architectures (``META_ARCH_REGISTRY``): an ``nn.Module`` class with ``from_config(cfg)``.
- norms (``NORM_REGISTRY``): ``fn(num_channels, **kwargs) -> nn.Module``.
- data sets (``DATASET_REGISTRY``): a ``ReIDDataset`` subclass built as ``cls(root, **kwargs)``.
- train samplers (``TRAIN_SAMPLERS``): ``fn(dataset, batch_size, cfg, seed, iters)`` returning
  a batch sampler.
- poolings (``POOLINGS``): ``cls(gem_p) -> nn.Module`` mapping (N, C, H, W) to (N, C).
- classifiers (``CLASSIFIERS``): ``cls(in_dim, num_classes, *, scale, margin)``.
- necks (``NECKS``): ``fn(dim) -> nn.Module``.
- optimizers (``OPTIMIZERS``): a ``torch.optim.Optimizer`` class.
- BNE combiners (``COMBINES``): ``fn(feats (D, N, C), weights (N, D)) -> (N, C)``.
"""

from __future__ import annotations

import difflib
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

__all__ = ["DuplicateNameError", "Registry", "UnknownNameError"]


class UnknownNameError(KeyError, ValueError):
    """No object is registered under the name.

    A ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad config value) at once, so that
    callers written against either of the registries this one replaced keep working.
    """

    def __str__(self) -> str:
        # KeyError's own __str__ quotes the message as a repr; show it as written.
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ValueError):
    """A second, different object was registered under a name that is taken."""


class Registry:
    """Maps names to classes or builder functions, one instance per family.

    Args:
        name: the family's name, used in error messages ("norm", "data set", ...).
        doc: what a registered object must provide (kept as the instance's ``__doc__``).
        items: objects to register at creation, by name.
    """

    def __init__(self, name: str, doc: str = "", items: dict[str, Any] | None = None) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}
        self.__doc__ = doc or f"Registry of {name}s."
        for key, obj in (items or {}).items():
            self._add(key, obj)

    @property
    def name(self) -> str:
        """The family's name."""
        return self._name

    def register(self, obj_or_name: Any = None, *, name: str | None = None) -> Any:
        """Register an object; usable as ``@reg.register``, ``@reg.register()``,
        ``@reg.register("key")``, ``@reg.register(name="key")`` or ``reg.register(obj)``.

        Args:
            obj_or_name: the object to register (default key: its ``__name__``), or the key.
            name: the key, given by keyword.

        Returns:
            The object itself when it was given, else a decorator that registers and returns
            its argument unchanged.

        Raises:
            DuplicateNameError: the key is taken by another object (registering the same
                object again is a no-op, so re-imports are harmless).
        """
        if isinstance(obj_or_name, str):
            name, obj_or_name = obj_or_name, None

        def deco(obj: Any) -> Any:
            self._add(name or obj.__name__, obj)
            return obj

        return deco if obj_or_name is None else deco(obj_or_name)

    def _add(self, key: str, obj: Any) -> None:
        old = self._obj_map.get(key)
        if old is not None and old is not obj:
            raise DuplicateNameError(
                f"{self._name} name '{key}' is already registered by {old!r}; cannot register "
                f"{obj!r} under it"
            )
        self._obj_map[key] = obj

    def unregister(self, name: str) -> Any:
        """Remove a registered object (for tests that register temporary ones).

        Args:
            name: the key.

        Returns:
            The removed object.
        """
        self.get(name)
        return self._obj_map.pop(name)

    def get(self, name: str) -> Any:
        """Return the object registered under ``name``.

        Args:
            name: the registry key.

        Returns:
            The registered object.

        Raises:
            UnknownNameError: nothing is registered under ``name``; the message gives close
                matches ("did you mean") and every registered name.
        """
        try:
            return self._obj_map[name]
        except (KeyError, TypeError):
            pass
        close = difflib.get_close_matches(str(name), list(self._obj_map), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"Unknown {self._name} '{name}'.{hint} Registered: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._obj_map)

    def keys(self) -> KeysView[str]:
        """The registered names, in registration order."""
        return self._obj_map.keys()

    def values(self) -> ValuesView[Any]:
        """The registered objects, in registration order."""
        return self._obj_map.values()

    def items(self) -> ItemsView[str, Any]:
        """``(name, object)`` pairs, in registration order."""
        return self._obj_map.items()

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[str]:
        return iter(self._obj_map)

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {self.names()})"
