"""reid_pbn: domain-robust person re-identification with Patch-aware Batch Normalization."""

from .version import __version__


def __getattr__(name):
    # Lazy import keeps `import reid_pbn` light (no model code until it is used).
    if name == "FeatureExtractor":
        from .api import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(name)


__all__ = ["FeatureExtractor", "__version__"]
