"""Config defaults, _BASE_ inheritance, overrides and error messages."""

import pytest
import yaml

from reid_pbn.config import ConfigError, get_cfg, parse_kwargs


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_have_contract_keys():
    cfg = get_cfg()
    for key in ("NAME", "DEPTH", "NORM", "IBN", "LAST_STRIDE", "PRETRAIN", "PRETRAIN_PATH"):
        assert key in cfg.MODEL.BACKBONE
    for top in ("MODEL", "INPUT", "DATASETS", "DATALOADER", "SOLVER", "TEST", "OUTPUT_DIR"):
        assert top in cfg
    assert {"NAMES", "TESTS", "ROOT"} <= set(cfg.DATASETS)


def test_every_default_key_has_a_comment():
    import inspect

    from reid_pbn.config import defaults

    lines = inspect.getsource(defaults).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("_C.") and "= CN()" not in line:
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above: {line}"


def test_base_inheritance_and_override_order(tmp_path):
    base = _write(tmp_path / "base.yml", {"SOLVER": {"BASE_LR": 0.1, "MAX_EPOCH": 5}})
    (tmp_path / "sub").mkdir()
    child = _write(tmp_path / "sub" / "child.yml",
                   {"_BASE_": "../base.yml", "SOLVER": {"MAX_EPOCH": 7}})
    assert base
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.SOLVER.BASE_LR == 0.1 and cfg.SOLVER.MAX_EPOCH == 7
    cfg.merge_from_list(["SOLVER.MAX_EPOCH", "9", "DATASETS.NAMES", "('A', 'B')"])
    assert cfg.SOLVER.MAX_EPOCH == 9 and cfg.DATASETS.NAMES == ("A", "B")


def test_misspelt_key_in_yaml_names_key_and_suggestion(tmp_path):
    f = _write(tmp_path / "bad.yml", {"SOLVER": {"BASE_RL": 0.1}})
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_file(f)
    msg = str(e.value)
    assert "SOLVER.BASE_RL" in msg and "SOLVER.BASE_LR" in msg


def test_misspelt_key_on_command_line():
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.DEPTH"):
        get_cfg().merge_from_list(["MODEL.BACKBONE.DEPHT", "18"])


def test_wrong_type_is_a_config_error(tmp_path):
    f = _write(tmp_path / "bad.yml", {"SOLVER": {"MAX_EPOCH": "many"}})
    with pytest.raises(ConfigError, match="MAX_EPOCH"):
        get_cfg().merge_from_file(f)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        get_cfg().merge_from_file("/nonexistent/x.yml")


def test_parse_kwargs():
    assert parse_kwargs(["num_groups=8", "mode=labeled", "flag=true"]) == {
        "num_groups": 8, "mode": "labeled", "flag": True}
    with pytest.raises(ConfigError):
        parse_kwargs(["novalue"])


def test_all_shipped_configs_load():
    import glob

    from reid_pbn.config import read_yaml_file
    from reid_pbn.engine.study import load_study

    files = [f for f in glob.glob("configs/**/*.yml", recursive=True)]
    assert len(files) >= 20
    for f in files:
        if "groups" in (read_yaml_file(f) or {}):  # a study file (configs/Study), not a model
            assert load_study(f).groups
            continue
        cfg = get_cfg()
        cfg.merge_from_file(f)


def _bomb(levels: int = 9) -> str:
    """A 'billion laughs' YAML: each level repeats the previous one 9 times (9**9 leaves)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"MODEL: {{DEVICE: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_fast_and_small(tmp_path):
    import resource
    import time

    path = tmp_path / "bomb.yml"
    path.write_text(_bomb())
    assert path.stat().st_size < 2048
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias"):
        get_cfg().merge_from_file(str(path))
    assert time.perf_counter() - t0 < 1.0
    # ru_maxrss is in KiB on Linux: the refusal allocated no more than a few MB.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50 * 1024
    with pytest.raises(ConfigError, match="alias"):
        parse_kwargs(["x=" + _bomb(3)])


def test_base_cycle_is_reported_as_such(tmp_path):
    (tmp_path / "a.yml").write_text("_BASE_: b.yml\nSOLVER: {MAX_EPOCH: 2}\n")
    (tmp_path / "b.yml").write_text("_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match=r"_BASE_ cycle: .*a\.yml -> .*b\.yml -> .*a\.yml"):
        get_cfg().merge_from_file(str(tmp_path / "a.yml"))
    (tmp_path / "self.yml").write_text("_BASE_: ./self.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        get_cfg().merge_from_file(str(tmp_path / "self.yml"))


def test_diamond_bases_are_not_a_cycle(tmp_path):
    (tmp_path / "root.yml").write_text("SOLVER: {MAX_EPOCH: 3}\n")
    (tmp_path / "l.yml").write_text("_BASE_: root.yml\n")
    (tmp_path / "r.yml").write_text("_BASE_: root.yml\n")
    (tmp_path / "top.yml").write_text("_BASE_: [l.yml, r.yml]\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "top.yml"))
    assert cfg.SOLVER.MAX_EPOCH == 3


def test_oversized_config_and_bad_base_are_refused(tmp_path):
    big = tmp_path / "big.yml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="limited to"):
        get_cfg().merge_from_file(str(big))
    bad = tmp_path / "bad.yml"
    bad.write_text("_BASE_: {a: 1}\n")
    with pytest.raises(ConfigError, match="_BASE_ must be"):
        get_cfg().merge_from_file(str(bad))


def test_config_saved_with_the_dropped_version_key_still_loads(tmp_path):
    # config.yaml files written before VERSION was dropped still load (the key is ignored).
    path = tmp_path / "config.yaml"
    path.write_text("VERSION: 1\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.SOLVER.BASE_LR == 0.5 and "VERSION" not in cfg
