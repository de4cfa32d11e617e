"""Study configs: the methods catalogue, the YAML schema, validation and the cells' configs.

A study config (``configs/Study/*.yml``) is a YAML mapping, read with the training configs' safe
loader and checked here before anything trains:

``base`` (required)
    Training config every cell starts from; a path relative to the study file.
``output_dir``
    Study folder (``cells.jsonl``, ``cells/``, results); overrides the base's ``OUTPUT_DIR``.
``overrides``
    ``{KEY: VALUE}`` training-config overrides for every cell.
``seeds`` (required)
    A count ``N`` (seeds ``0 .. N-1``) or a list of distinct non-negative seeds.
``baseline``
    Method every other method is compared with (default ``BN``).
``strength_zero``
    Data set plotted at strength 0 of the shift families (``Family@strength`` targets).
``keep_checkpoints``
    Keep each cell's final checkpoint (default false: the checksum is recorded, the file
    deleted, as sixty ResNet-18 checkpoints with optimizer state fill gigabytes).
``groups`` (required)
    A list of ``{name, sources, targets, methods[, baseline][, overrides]}``: the sources
    (``DATASETS.NAMES``) trained on, the targets (``DATASETS.TESTS``, ``Name@strength``
    allowed) every trained model is evaluated on, and the methods. A method is a catalogue
    name (:data:`METHODS`) or ``{name, label, overrides}`` for a variant of one.

The study sets ``DATASETS.NAMES``, ``DATASETS.TESTS``, ``SOLVER.SEED`` and ``OUTPUT_DIR`` of each
cell itself. Settings apply in this order: base file, ``overrides``, ``output_dir``,
command-line ``KEY VALUE`` pairs, the group's ``overrides``, the method's catalogue overrides,
the method entry's ``overrides``, and the study's own keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...config import CfgNode, ConfigError, get_cfg, read_yaml_file
from ...data import DATASET_REGISTRY

__all__ = [
    "METHODS",
    "CellSpec",
    "GroupSpec",
    "MethodDef",
    "MethodSpec",
    "Study",
    "StudyError",
    "config_hash",
    "load_study",
]


class StudyError(ValueError):
    """A study config, its results file or a cell cannot be used; the message says what to do."""


@dataclass(frozen=True)
class MethodDef:
    """A method of the catalogue: what its name means as config overrides.

    Attributes:
        name: the name used in study configs.
        overrides: ``{KEY: VALUE}`` that select the method (they set every key the methods
            differ in, so a method means the same whatever the base config says).
        description: one line for documentation and ``--help``.
        min_sources: fewest source domains the method works with.
        train: False for reference rows that are evaluated without training.
    """

    name: str
    overrides: Mapping[str, Any]
    description: str
    min_sources: int = 1
    train: bool = True

    @property
    def reference(self) -> bool:
        """A reference row (not a contender): shown, not compared with the baseline."""
        return not self.train


_NORM, _IBN, _INNER = "MODEL.BACKBONE.NORM", "MODEL.BACKBONE.IBN", "MODEL.BACKBONE.DSBN.INNER"
_MIX, _MIX_STAGES = "MODEL.BACKBONE.MIX.TYPE", "MODEL.BACKBONE.MIX.STAGES"
_SAMPLER = "DATALOADER.SAMPLER"
# After the first two stages, as both published re-ID protocols mix: the ResNet names also
# select OSNet's conv2 and conv3, so one entry serves both backbones (MODEL.BACKBONE.NAME,
# e.g. osnet_x0_25, comes from the base config or the study's overrides).
_MIX_AFTER = ("layer1", "layer2")


def _mixing(kind: str, norm: str) -> dict[str, Any]:
    """Overrides of a feature-statistics mixing method (``kind``) with ``norm`` everywhere.

    Args:
        kind: ``"MixStyle"`` or ``"EFDMix"`` (``MODEL.BACKBONE.MIX.TYPE``).
        norm: ``MODEL.BACKBONE.NORM`` of the backbone (``"BN"`` or ``"PBN"``).

    Returns:
        The ``{KEY: VALUE}`` overrides.
    """
    return {_NORM: norm, _IBN: "", _MIX: kind, _MIX_STAGES: _MIX_AFTER}


#: The methods a study may name. BNE needs domain-pure batches, so it brings its own sampler;
#: the others keep the base config's sampler (PK by default). Every method sets the mixing type
#: ("" for none), so that BN means no mixing even when the base config mixes. Mixing keeps the
#: base config's MIX.P, MIX.ALPHA and MIX.MODE (a method entry's overrides may change them).
METHODS: dict[str, MethodDef] = {m.name: m for m in (
    MethodDef("BN", {_NORM: "BN", _IBN: "", _MIX: ""}, "Batch Normalization, the usual baseline"),
    MethodDef("PBN", {_NORM: "PBN", _IBN: "", _MIX: ""}, "Patch-aware BN in every BN layer"),
    MethodDef("IBN-a", {_NORM: "BN", _IBN: "a", _MIX: ""}, "IBN-Net-a: InstanceNorm on half "
              "of bn1 in layer1-3"),
    MethodDef("IBN-a+PBN", {_NORM: "PBN", _IBN: "a", _MIX: ""},
              "IBN-a with PBN in place of every BN"),
    MethodDef("StochNorm", {_NORM: "StochNorm", _IBN: "", _MIX: ""}, "Stochastic Normalization"),
    MethodDef("BNE", {_NORM: "DSBN", _INNER: "BN", _IBN: "", _MIX: "",
                      _SAMPLER: "domain_balanced"},
              "Batch Normalization Embeddings: per-source BN paths weighted by W2 distance",
              min_sources=2),
    MethodDef("BNE+PBN", {_NORM: "DSBN", _INNER: "PBN", _IBN: "", _MIX: "",
                          _SAMPLER: "domain_balanced"},
              "BNE with PBN inside every domain branch", min_sources=2),
    MethodDef("MixStyle", _mixing("MixStyle", "BN"), "MixStyle after the first two stages "
              "(ResNet layer1-2, OSNet conv2-3)"),
    MethodDef("EFDMix", _mixing("EFDMix", "BN"), "EFDMix (sorted-feature mixing) after the "
              "first two stages"),
    MethodDef("MixStyle+PBN", _mixing("MixStyle", "PBN"), "MixStyle with PBN in place of "
              "every BN"),
    MethodDef("EFDMix+PBN", _mixing("EFDMix", "PBN"), "EFDMix with PBN in place of every BN"),
    MethodDef("untrained", {_NORM: "BN", _IBN: "", _MIX: ""}, "the BN network at "
              "initialization, evaluated without training: a reference floor", train=False),
)}

#: Keys each cell gets from the study itself.
MANAGED_KEYS = ("DATASETS.NAMES", "DATASETS.TESTS", "SOLVER.SEED", "OUTPUT_DIR")
_TOP_KEYS = {"base", "output_dir", "overrides", "seeds", "baseline", "strength_zero",
             "keep_checkpoints", "groups", "name"}
_GROUP_KEYS = {"name", "sources", "targets", "methods", "baseline", "overrides"}
_METHOD_KEYS = {"name", "label", "overrides"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class MethodSpec:
    """A method as a group runs it.

    Attributes:
        label: its name in paths, records and tables (the catalogue name unless relabelled).
        definition: the catalogue entry.
        overrides: catalogue overrides followed by the entry's own, ``{KEY: VALUE}``.
    """

    label: str
    definition: MethodDef
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class GroupSpec:
    """Sources, targets and methods trained together (one baseline).

    Attributes:
        name: group name (a folder name).
        sources: training data sets.
        targets: evaluation data sets.
        methods: the methods, baseline included.
        baseline: label of the baseline method.
        overrides: ``{KEY: VALUE}`` for every cell of the group.
    """

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    baseline: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class CellSpec:
    """One (group, method, seed): its final training config and where it runs.

    Attributes:
        group: the group.
        method: the method.
        seed: ``SOLVER.SEED`` of the cell.
        cfg: the frozen training config (``OUTPUT_DIR`` is the cell folder).
        config_hash: :func:`config_hash` of ``cfg``.
        rel_dir: the cell folder relative to the study folder.
    """

    group: GroupSpec
    method: MethodSpec
    seed: int
    cfg: CfgNode = field(repr=False)
    config_hash: str
    rel_dir: str

    @property
    def key(self) -> tuple[str, str, int]:
        """``(group, method label, seed)``: what identifies the cell in ``cells.jsonl``."""
        return (self.group.name, self.method.label, self.seed)

    @property
    def name(self) -> str:
        """``group/method/seed<k>``, as ``--only`` and ``--verify-cell`` take it."""
        return f"{self.group.name}/{self.method.label}/seed{self.seed}"


@dataclass(frozen=True)
class Study:
    """A validated study.

    Attributes:
        path: the study file.
        name: title of the study (the file's stem unless ``name`` is set).
        output_dir: the study folder.
        seeds: the seeds, in run order.
        groups: the groups, in order.
        cells: every cell, in run order: seeds outermost, so a study stopped early holds
            complete seeds for every method.
        strength_zero: data set plotted at strength 0 of the shift families ("" for none).
        keep_checkpoints: keep the cells' final checkpoints.
    """

    path: str
    name: str
    output_dir: str
    seeds: tuple[int, ...]
    groups: tuple[GroupSpec, ...]
    cells: tuple[CellSpec, ...]
    strength_zero: str
    keep_checkpoints: bool

    def cell(self, name: str) -> CellSpec:
        """The cell called ``group/method/seed<k>``.

        Args:
            name: the cell's name.

        Raises:
            StudyError: no such cell.
        """
        for c in self.cells:
            if c.name == name:
                return c
        raise StudyError(f"No cell '{name}' in {self.path}; cells are named like "
                         f"'{self.cells[0].name}'")


def config_hash(cfg: Mapping, rel_dir: str) -> str:
    """SHA-256 of the keys where a cell's config differs from the defaults, with
    ``OUTPUT_DIR`` written as the cell's folder relative to the study folder (so a study folder
    can move and still resume).

    Only the differences count: a key added to the defaults later (at a value that keeps the
    old behaviour) leaves every recorded cell's hash, and so its records, valid. Keys the
    defaults no longer have are ignored for the same reason.

    Args:
        cfg: the cell's config (a ``CfgNode``, or the mapping of a saved ``config.yaml``).
        rel_dir: the cell folder relative to the study folder.

    Returns:
        The hex digest.
    """
    defaults = _flat(get_cfg())
    values = _flat(cfg)
    values["OUTPUT_DIR"] = rel_dir
    diff = {k: v for k, v in values.items() if k in defaults and v != defaults[k]}
    text = json.dumps(diff, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flat(node: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"A.B.C": value}`` of a nested config, tuples as lists (as YAML reads them back)."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def load_study(path: str, opts: Sequence[str] = ()) -> Study:
    """Read and validate a study config and build every cell's training config.

    Nothing is trained or generated; data sets are checked against the registry by name.

    Args:
        path: the study YAML file.
        opts: command-line ``KEY VALUE`` overrides for every cell (``OUTPUT_DIR`` moves the
            study folder).

    Returns:
        The study.

    Raises:
        StudyError: any problem, with what to change.
    """
    raw = _read_yaml(path)
    _check_keys(raw, _TOP_KEYS, f"{path}")
    for key in ("base", "seeds", "groups"):
        if key not in raw:
            raise StudyError(f"{path}: missing key '{key}'")
    base = str(raw["base"])
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    seeds = _seeds(raw["seeds"], path)
    baseline = str(raw.get("baseline", "BN"))
    groups = _groups(raw["groups"], baseline, path)
    opts = list(opts)
    if len(opts) % 2:
        raise StudyError(f"Overrides must be KEY VALUE pairs, got an odd number: {opts}")
    _check_cli_keys(opts[0::2], groups)
    cfg0 = get_cfg()
    try:
        cfg0.merge_from_file(base_path)
        _merge(cfg0, _mapping(raw.get("overrides", {}), f"{path}: overrides"), f"{path}: overrides")
        if raw.get("output_dir"):
            cfg0.OUTPUT_DIR = str(raw["output_dir"])
        cfg0.merge_from_list(opts)
    except ConfigError as e:
        raise StudyError(str(e)) from e
    if not cfg0.OUTPUT_DIR:
        raise StudyError(f"{path}: the study folder is empty; set output_dir")
    cells = tuple(_cell(cfg0, g, m, s) for s in seeds for g in groups for m in g.methods)
    return Study(
        path=path,
        name=str(raw.get("name") or os.path.splitext(os.path.basename(path))[0]),
        output_dir=str(cfg0.OUTPUT_DIR),
        seeds=seeds,
        groups=groups,
        cells=cells,
        strength_zero=str(raw.get("strength_zero") or ""),
        keep_checkpoints=bool(raw.get("keep_checkpoints", False)),
    )


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise StudyError(f"Study config not found: {path}")
    try:
        raw = read_yaml_file(path) or {}  # the training configs' loader: size cap, no aliases
    except ConfigError as e:
        raise StudyError(" ".join(str(e).split())) from e
    if not isinstance(raw, dict):
        raise StudyError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return raw


def _check_keys(d: Mapping, valid: set[str], where: str) -> None:
    unknown = sorted(set(map(str, d)) - valid)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: "
                         f"{', '.join(sorted(valid))}")


def _seeds(value: Any, path: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        value = None  # True/False are ints to Python, never seed counts
    if isinstance(value, int):
        if value < 1:
            raise StudyError(f"{path}: seeds is {value}; give a count >= 1 or a list of seeds")
        return tuple(range(value))
    if isinstance(value, list) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise StudyError(f"{path}: seeds lists a seed twice: {value}")
        return tuple(value)
    raise StudyError(f"{path}: seeds must be a count >= 1 or a non-empty list of distinct "
                     f"non-negative integers, got {value!r}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{where} must be a mapping {{KEY: VALUE}}, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where} must be a non-empty list of data-set names, got {value!r}")
    if len(set(value)) != len(value):
        raise StudyError(f"{where} lists a data set twice: {value}")
    for name in value:
        base = name.partition("@")[0]
        if base not in DATASET_REGISTRY:
            raise StudyError(f"{where}: unknown data set '{name}'; registered: "
                             f"{', '.join(sorted(DATASET_REGISTRY))} (a shift strength is "
                             "written Name@value)")
    return tuple(value)


def _safe(name: str, where: str) -> str:
    if not _SAFE_NAME.match(name):
        raise StudyError(f"{where}: '{name}' must be letters, digits and _ . + - (it names a "
                         "folder)")
    return name


def _method(entry: Any, where: str, num_sources: int) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise StudyError(f"{where}: a method is a name or {{name, label, overrides}}, "
                         f"got {entry!r}")
    _check_keys(entry, _METHOD_KEYS, where)
    name = str(entry["name"])
    if name not in METHODS:
        raise StudyError(f"{where}: unknown method '{name}'; known methods: "
                         f"{', '.join(METHODS)}")
    definition = METHODS[name]
    if num_sources < definition.min_sources:
        raise StudyError(f"{where}: {name} needs at least {definition.min_sources} sources, the "
                         f"group has {num_sources}")
    label = _safe(str(entry.get("label") or name), where)
    extra = _mapping(entry.get("overrides"), f"{where} ({label}): overrides")
    return MethodSpec(label, definition, {**definition.overrides, **extra})


def _groups(value: Any, default_baseline: str, path: str) -> tuple[GroupSpec, ...]:
    if not isinstance(value, list) or not value:
        raise StudyError(f"{path}: groups must be a non-empty list")
    groups = []
    for i, g in enumerate(value):
        where = f"{path}: groups[{i}]"
        if not isinstance(g, dict):
            raise StudyError(f"{where} must be a mapping, got {g!r}")
        _check_keys(g, _GROUP_KEYS, where)
        for key in ("name", "sources", "targets", "methods"):
            if key not in g:
                raise StudyError(f"{where}: missing key '{key}'")
        name = _safe(str(g["name"]), where)
        where = f"{path}: group '{name}'"
        sources = _names(g["sources"], f"{where}: sources")
        targets = _names(g["targets"], f"{where}: targets")
        if not isinstance(g["methods"], list) or not g["methods"]:
            raise StudyError(f"{where}: methods must be a non-empty list")
        methods = tuple(_method(m, f"{where}: methods", len(sources)) for m in g["methods"])
        labels = [m.label for m in methods]
        if len(set(labels)) != len(labels):
            raise StudyError(f"{where}: two methods share a label ({labels}); relabel one")
        baseline = str(g.get("baseline", default_baseline))
        by_label = {m.label: m for m in methods}
        if baseline not in by_label or by_label[baseline].definition.reference:
            contenders = [m.label for m in methods if not m.definition.reference]
            raise StudyError(f"{where}: baseline '{baseline}' is not a trained method of the "
                             f"group; choose one of {', '.join(contenders)}")
        overrides = _mapping(g.get("overrides"), f"{where}: overrides")
        groups.append(GroupSpec(name, sources, targets, methods, baseline, overrides))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise StudyError(f"{path}: two groups share the name in {names}")
    return tuple(groups)


def _check_cli_keys(keys: Sequence[str], groups: Sequence[GroupSpec]) -> None:
    for key in keys:
        if key in MANAGED_KEYS[:3]:
            raise StudyError(f"{key} is set by the study (sources, targets, seeds); change the "
                             "study config instead")
        setters = sorted({m.label for g in groups for m in g.methods if key in m.overrides})
        if setters:
            raise StudyError(f"{key} is what the methods {', '.join(setters)} set; a "
                             "command-line value would be overridden in their cells")


def _merge(cfg: CfgNode, overrides: Mapping[str, Any], where: str) -> None:
    for key in overrides:
        if key in MANAGED_KEYS:
            raise StudyError(f"{where}: {key} is set by the study itself (sources, targets, "
                             "seeds, output_dir)")
    try:
        cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    except ConfigError as e:
        raise StudyError(f"{where}: {e}".replace(" on the command line", "")) from e


def _cell(cfg0: CfgNode, group: GroupSpec, method: MethodSpec, seed: int) -> CellSpec:
    cfg = cfg0.clone()
    cfg.defrost()
    _merge(cfg, group.overrides, f"group '{group.name}': overrides")
    _merge(cfg, method.overrides, f"group '{group.name}', method '{method.label}': overrides")
    cfg.DATASETS.NAMES = group.sources
    cfg.DATASETS.TESTS = group.targets
    cfg.SOLVER.SEED = int(seed)
    rel_dir = os.path.join("cells", group.name, method.label, f"seed{seed}")
    cfg.OUTPUT_DIR = os.path.join(cfg0.OUTPUT_DIR, rel_dir)
    cfg.freeze()
    return CellSpec(group, method, int(seed), cfg, config_hash(cfg, rel_dir), rel_dir)
