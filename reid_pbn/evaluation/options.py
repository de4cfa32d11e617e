"""Typed options of the evaluation's post-processing: k-reciprocal re-ranking and average query
expansion. Each default is written here once; the functions that take these settings as
separate arguments use the dataclass fields as their defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

__all__ = ["QueryExpansionOptions", "RerankOptions"]


class _Options:
    """What the option dataclasses share: reading an argument in any of its accepted forms."""

    #: Name of the argument, for error messages.
    _argument: ClassVar[str] = ""
    #: Dict keys accepted for a field under another name (the documented dict form's).
    _aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """Read an argument given as options, ``True``, a dict, or ``None``/``False``.

        Args:
            value: ``None``/``False`` (off), ``True`` (the defaults), an instance, or a dict of
                fields (keys may be left out; the aliases of the documented dict form are
                accepted).

        Returns:
            The options, or ``None`` when the feature is off.

        Raises:
            ValueError: an unknown key or a value out of range.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        fields = {cls._aliases.get(k, k): v for k, v in dict(value).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"Unknown {cls._argument} option(s) {unknown}; known: "
                f"{sorted(known | set(cls._aliases))}"
            )
        # Dict values may be strings or numpy scalars: convert to the type of each default.
        return cls(**{k: type(getattr(cls, k))(v) for k, v in fields.items()})


@dataclass(frozen=True)
class RerankOptions(_Options):
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) settings.

    Attributes:
        k1: size of the k-reciprocal neighbourhoods.
        k2: size of the local query expansion of the neighbourhood vectors.
        lambda_value: weight of the original distance in the final one (in [0, 1]).
    """

    _argument: ClassVar[str] = "rerank"
    _aliases: ClassVar[dict[str, str]] = {"lambda": "lambda_value"}

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ValueError(f"k1 and k2 must be at least 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {self.lambda_value}")

    def as_dict(self) -> dict[str, Any]:
        """The documented dict form ``{"k1", "k2", "lambda"}`` (for result files and logs)."""
        return {"k1": self.k1, "k2": self.k2, "lambda": self.lambda_value}


@dataclass(frozen=True)
class QueryExpansionOptions(_Options):
    """Average query expansion (alpha-QE, Radenovic et al.), as fast-reid's ``aqe``.

    Attributes:
        qe_times: rounds of expansion.
        qe_k: neighbours averaged into each feature per round.
        alpha: exponent of the similarity weights (0: plain average).
    """

    _argument: ClassVar[str] = "aqe"

    qe_times: int = 1
    qe_k: int = 5
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.qe_times < 1 or self.qe_k < 1 or self.alpha < 0:
            raise ValueError(
                f"query expansion needs qe_times >= 1, qe_k >= 1 and alpha >= 0, got "
                f"qe_times={self.qe_times}, qe_k={self.qe_k}, alpha={self.alpha}"
            )

    def as_dict(self) -> dict[str, Any]:
        """``{"qe_times", "qe_k", "alpha"}`` (for result files and logs)."""
        return asdict(self)
