"""Typed options of the evaluation's post-processing: k-reciprocal re-ranking and average query
expansion. Each default is written here once; the functions that take these settings as
separate arguments use the dataclass fields as their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["QueryExpansionOptions", "RerankOptions"]


@dataclass(frozen=True)
class RerankOptions:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) settings.

    Attributes:
        k1: size of the k-reciprocal neighbourhoods.
        k2: size of the local query expansion of the neighbourhood vectors.
        lambda_value: weight of the original distance in the final one (in [0, 1]).
    """

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ValueError(f"k1 and k2 must be at least 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {self.lambda_value}")

    @classmethod
    def coerce(cls, value: RerankOptions | Mapping[str, Any] | bool | None) -> RerankOptions | None:
        """Read the ``rerank`` argument of :func:`~reid_pbn.evaluation.evaluate`.

        Args:
            value: ``None``/``False`` (off), ``True`` (the defaults), a ``RerankOptions``, or
                the documented dict form ``{"k1": 20, "k2": 6, "lambda": 0.3}`` (keys may be
                left out; ``"lambda_value"`` is accepted for ``"lambda"``).

        Returns:
            The options, or ``None`` when re-ranking is off.

        Raises:
            ValueError: an unknown key or a value out of range.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        fields = dict(value)
        if "lambda" in fields:
            fields["lambda_value"] = fields.pop("lambda")
        _check_keys(fields, {"k1", "k2", "lambda_value"}, "rerank", extra=("lambda",))
        return cls(**{k: _typed(cls, k, v) for k, v in fields.items()})

    def as_dict(self) -> dict[str, Any]:
        """The documented dict form ``{"k1", "k2", "lambda"}`` (for result files and logs)."""
        return {"k1": self.k1, "k2": self.k2, "lambda": self.lambda_value}


@dataclass(frozen=True)
class QueryExpansionOptions:
    """Average query expansion (alpha-QE, Radenovic et al.), as fast-reid's ``aqe``.

    Attributes:
        qe_times: rounds of expansion.
        qe_k: neighbours averaged into each feature per round.
        alpha: exponent of the similarity weights (0: plain average).
    """

    qe_times: int = 1
    qe_k: int = 5
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.qe_times < 1 or self.qe_k < 1 or self.alpha < 0:
            raise ValueError(
                f"query expansion needs qe_times >= 1, qe_k >= 1 and alpha >= 0, got "
                f"qe_times={self.qe_times}, qe_k={self.qe_k}, alpha={self.alpha}"
            )

    @classmethod
    def coerce(
        cls, value: QueryExpansionOptions | Mapping[str, Any] | bool | None
    ) -> QueryExpansionOptions | None:
        """Read the ``aqe`` argument of :func:`~reid_pbn.evaluation.evaluate`.

        Args:
            value: ``None``/``False`` (off), ``True`` (the defaults), a
                ``QueryExpansionOptions``, or a dict ``{"qe_times", "qe_k", "alpha"}`` (keys may
                be left out).

        Returns:
            The options, or ``None`` when query expansion is off.

        Raises:
            ValueError: an unknown key or a value out of range.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        fields = dict(value)
        _check_keys(fields, {"qe_times", "qe_k", "alpha"}, "aqe")
        return cls(**{k: _typed(cls, k, v) for k, v in fields.items()})

    def as_dict(self) -> dict[str, Any]:
        """``{"qe_times", "qe_k", "alpha"}`` (for result files and logs)."""
        return asdict(self)


def _check_keys(fields: Mapping[str, Any], allowed: set[str], what: str,
                extra: tuple[str, ...] = ()) -> None:
    """Refuse keys a dict of options does not know (a typo would silently be a default)."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown {what} option(s) {unknown}; known: {sorted(allowed | set(extra))}"
        )


def _typed(cls: type, key: str, value: Any) -> Any:
    """``value`` converted to the type of the field's default (dict values may be strings or
    numpy scalars)."""
    return type(getattr(cls, key))(value)
