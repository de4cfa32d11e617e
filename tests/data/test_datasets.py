"""Parsing of every registered data set from small trees with the real naming conventions."""

from __future__ import annotations

import os

import pytest
from reid_data_trees import (
    TREE_BUILDERS,
    make_cuhk03,
    make_custom,
    make_grid,
    make_market,
    make_msmt17,
    write_jpeg,
)

from reid_pbn.data import DATASET_REGISTRY, build_dataset, register_dataset
from reid_pbn.data.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    EmptySplitError,
    ReIDDataset,
    parse_market_style_dir,
)


def test_every_registered_name_has_a_tree_builder():
    # A new data set must come with a tree builder so that the test below covers it.
    assert set(DATASET_REGISTRY) == set(TREE_BUILDERS)


@pytest.mark.parametrize("name", sorted(TREE_BUILDERS))
def test_build_every_registered_dataset(name, data_root):
    expected = TREE_BUILDERS[name](data_root)
    ds = build_dataset(name, root=str(data_root), **expected.get("kwargs", {}))
    assert isinstance(ds, ReIDDataset)
    assert len(ds.train) == expected["train"]
    assert len(ds.query) == expected["query"]
    assert len(ds.gallery) == expected["gallery"]
    assert ds.num_train_pids == expected["train_pids"]
    assert ds.num_train_cams == expected["train_cams"]
    # Train pids relabelled to 0..K-1; query/gallery keep the original ones.
    assert sorted({p for _, p, _ in ds.train}) == list(range(expected["train_pids"]))
    assert {p for _, p, _ in ds.gallery} == expected["gallery_pids"]
    for items in (ds.train, ds.query, ds.gallery):
        for path, pid, cam in items:
            assert os.path.isfile(path)
            assert isinstance(pid, int) and isinstance(cam, int) and cam >= 0
            assert not os.path.basename(path).startswith(("-1_", "Thumbs", "."))
    assert "train" in ds.summary() and ds.name in ds.summary()


def test_market_details(data_root):
    make_market(data_root)
    ds = build_dataset("Market1501", root=str(data_root))
    names = {os.path.basename(p): (pid, cam) for p, pid, cam in ds.gallery}
    # pid 0000 distractors stay; -1 junk is dropped; cameras are 0-based.
    assert names["0000_c4s1_000003_02.jpg"] == (0, 3)
    assert names["0000_c6s1_000004_02.jpg"] == (0, 5)
    assert not any(n.startswith("-1") for n in names)
    # Relabelling follows sorted original pids: 2 -> 0, 7 -> 1, 11 -> 2.
    assert ds.train_pid_map == {2: 0, 7: 1, 11: 2}
    train = {os.path.basename(p): (pid, cam) for p, pid, cam in ds.train}
    assert train["0007_c6s1_000003_01.jpg"] == (1, 5)
    assert train["0011_c4s1_000005_01.jpg"] == (2, 3)
    q = sorted((pid, cam) for _, pid, cam in ds.query)
    assert q == [(1, 0), (3, 4)]


def test_market_alternative_folder_and_env_root(data_root, monkeypatch):
    make_market(data_root, folder="Market-1501")
    monkeypatch.setenv("REID_PBN_DATASETS", str(data_root))
    ds = build_dataset("Market1501")  # root from the environment
    assert ds.dataset_dir == os.path.join(str(data_root), "Market-1501")
    assert len(ds.train) == 6


def test_default_root_is_datasets_in_cwd(data_root, monkeypatch):
    make_market(data_root / "datasets")
    monkeypatch.chdir(data_root)
    ds = build_dataset("Market1501")
    assert ds.root == os.path.join(str(data_root), "datasets")


def test_cuhk03_labeled_subset(data_root):
    make_cuhk03(data_root)
    ds = build_dataset("CUHK03", root=str(data_root), subset="labeled")
    assert len(ds.train) == 4 and ds.num_train_pids == 3
    with pytest.raises(ValueError, match="detected.*labeled"):
        build_dataset("CUHK03", root=str(data_root), subset="both")


def test_msmt17_v2_and_val(data_root):
    make_msmt17(data_root, version="MSMT17_V2")
    ds = build_dataset("MSMT17", root=str(data_root), combine_val=True)
    assert len(ds.train) == 4
    cams = sorted({c for _, _, c in ds.train})
    assert cams == [0, 2, 3, 14]
    assert all("mask_train_v2" in p for p, _, _ in ds.train)


def test_msmt17_bad_list_line(data_root):
    make_msmt17(data_root)
    (data_root / "MSMT17_V1" / "list_query.txt").write_text("garbage_line\n")
    with pytest.raises(DatasetFormatError, match=r"list_query.txt:1"):
        build_dataset("MSMT17", root=str(data_root))


def test_grid_splits_and_cache(data_root):
    make_grid(data_root)
    ds3 = build_dataset("GRID", root=str(data_root), split_id=3)
    # Split 3 trains on ids {4, 5}.
    assert sorted({os.path.basename(p)[:4] for p, _, _ in ds3.train}) == ["0004", "0005"]
    assert {p for _, p, _ in ds3.query} == {1, 2, 3, 6}
    splits_json = data_root / "underground_reid" / "splits.json"
    assert splits_json.is_file()
    ds3b = build_dataset("GRID", root=str(data_root), split_id=3)  # read back from the cache
    assert ds3b.train == ds3.train and ds3b.gallery == ds3.gallery
    with pytest.raises(ValueError, match="split_id"):
        build_dataset("GRID", root=str(data_root), split_id=10)


def test_custom_dataset_per_split_files(data_root):
    base = data_root / "mine"
    for i in range(4):
        write_jpeg(base / f"img{i}.jpg", i)
    (base / "train.csv").write_text("path,pid,camid\nimg0.jpg,5,0\nimg1.jpg,5,1\nimg2.jpg,8,0\n")
    ds = build_dataset("CustomDataset", root=str(data_root), dataset_dir="mine")
    assert len(ds.train) == 3 and ds.query == [] and ds.gallery == []
    assert ds.num_train_pids == 2


@pytest.mark.parametrize(
    "content, match",
    [
        ("path,pid\nimg0.jpg,1\n", "header row"),
        ("path,pid,camid,split\nimg0.jpg,x,0,train\n", r"list.csv:2: pid and camid"),
        ("path,pid,camid,split\nimg0.jpg,1,0,validation\n", "split must be"),
        ("path,pid,camid,split\nimg0.jpg,1,-3,train\n", "camid -3 out of range"),
    ],
)
def test_custom_dataset_format_errors(data_root, content, match):
    base = data_root / "custom"
    write_jpeg(base / "img0.jpg")
    (base / "list.csv").write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        build_dataset("CustomDataset", root=str(data_root))


def test_custom_dataset_bom_extra_values_overlap_and_outside_paths(data_root, tmp_path, caplog):
    base = data_root / "custom"
    for i in range(3):
        write_jpeg(base / f"img{i}.jpg", i)
    outside = tmp_path / "elsewhere" / "far.jpg"
    write_jpeg(outside, 7)
    # A spreadsheet export: byte-order mark, an extra named column.
    rows = ("path,pid,camid,split,note\nimg0.jpg,1,0,query,x\nimg0.jpg,1,1,gallery,\n"
            f"img1.jpg,2,1,gallery,\n{outside},3,0,gallery,\n")
    (base / "list.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    with caplog.at_level("WARNING"):
        ds = build_dataset("CustomDataset", root=str(data_root))
    assert len(ds.query) == 1 and len(ds.gallery) == 3
    assert "both query and gallery" in caplog.text and "outside" in caplog.text
    # More values than the header names: the line is named, no raw error.
    (base / "list.csv").write_text("path,pid,camid,split\nimg0.jpg,1,0,query,extra\n")
    with pytest.raises(DatasetFormatError, match=r"list.csv:2: 5 values but the header names 4"):
        build_dataset("CustomDataset", root=str(data_root))


def test_custom_dataset_num_cams_range(data_root):
    make_custom(data_root)
    with pytest.raises(DatasetFormatError, match=r"camid 2 out of range \(0..1\)"):
        build_dataset("CustomDataset", root=str(data_root), num_cams=2)


@pytest.mark.parametrize("name", ["Market1501", "DukeMTMC", "MSMT17", "CUHK03", "GRID",
                                  "CustomDataset"])
def test_missing_dataset_shows_expected_tree(name, data_root):
    with pytest.raises(DatasetNotFoundError) as exc:
        build_dataset(name, root=str(data_root))
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError)
    assert str(data_root) in msg
    assert "Expected tree" in msg and "REID_PBN_DATASETS" in msg
    assert DATASET_REGISTRY[name].folder_names[0] in msg
    if name == "Market1501":
        assert "bounding_box_train" in msg and "Market-1501-v15.09.15" in msg
        assert "Get it from" in msg


def test_missing_split_folder_is_named(data_root):
    make_market(data_root)
    query = data_root / "Market-1501-v15.09.15" / "query"
    for f in query.iterdir():
        f.unlink()
    query.rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"Missing: .*query"):
        build_dataset("Market1501", root=str(data_root))


def test_empty_split_is_reported(data_root):
    make_market(data_root)
    query = data_root / "Market-1501-v15.09.15" / "query"
    for f in query.glob("*.jpg"):
        f.unlink()
    with pytest.raises(EmptySplitError, match=r"no images named .* in .*query"):
        build_dataset("Market1501", root=str(data_root))


def test_camera_out_of_range(data_root):
    make_market(data_root)
    write_jpeg(data_root / "Market-1501-v15.09.15" / "query" / "0001_c7s1_000001_00.jpg")
    with pytest.raises(DatasetFormatError, match=r"camera c7 .*outside c1..c6"):
        build_dataset("Market1501", root=str(data_root))


def test_badly_named_files_are_skipped_with_a_warning(tmp_path, caplog):
    write_jpeg(tmp_path / "0001_c1s1_000001_00.jpg")
    write_jpeg(tmp_path / "holiday.jpg")
    write_jpeg(tmp_path / "12-3_c1s1_000001_00.jpg")
    items = parse_market_style_dir(str(tmp_path), num_cams=6, dataset="X")
    assert [(pid, cam) for _, pid, cam in items] == [(1, 0)]
    assert "holiday.jpg" in caplog.text and "skipped 2 files" in caplog.text


def test_unknown_name_suggests(data_root):
    with pytest.raises(ValueError, match="Did you mean: Market1501"):
        build_dataset("Market1502", root=str(data_root))


def test_register_dataset_rejects_duplicates_and_non_datasets():
    with pytest.raises(TypeError):
        register_dataset(object)

    class Market1501(ReIDDataset):  # same name, different class
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_dataset(Market1501)
