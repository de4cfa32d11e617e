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
    for top in ("MODEL", "INPUT", "DATASETS", "DATALOADER", "SOLVER", "TEST", "OUTPUT_DIR",
                "VERSION"):
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

    files = [f for f in glob.glob("configs/**/*.yml", recursive=True)]
    assert len(files) >= 20
    for f in files:
        cfg = get_cfg()
        cfg.merge_from_file(f)
