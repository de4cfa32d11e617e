"""DefaultTrainer used as a library (no train_net.py, no default_setup)."""

import json
from pathlib import Path

from reid_pbn.engine import DefaultTrainer, setup_cfg


def test_trainer_from_library_creates_output_dir_and_evaluates(tmp_path):
    out = tmp_path / "not" / "yet" / "there"
    opts = {
        "MODEL.DEVICE": "cpu", "MODEL.BACKBONE.DEPTH": "18", "MODEL.BACKBONE.PRETRAIN": "False",
        "INPUT.SIZE_TRAIN": "(64, 32)", "INPUT.SIZE_TEST": "(64, 32)",
        "INPUT.PADDING.SIZE": "4", "DATASETS.NAMES": "('SyntheticA',)",
        "DATASETS.TESTS": "('SyntheticB',)", "DATASETS.ROOT": str(tmp_path / "data"),
        "DATASETS.SYNTHETIC.NUM_IDS": "12", "DATASETS.SYNTHETIC.NUM_CAMS": "2",
        "DATASETS.SYNTHETIC.IMGS_PER_CAM": "2", "DATASETS.SYNTHETIC.SIZE": "(64, 32)",
        "DATALOADER.NUM_WORKERS": "0", "DATALOADER.NUM_INSTANCE": "2",
        "SOLVER.IMS_PER_BATCH": "8", "SOLVER.ITERS_PER_EPOCH": "2", "SOLVER.MAX_EPOCH": "1",
        "SOLVER.WARMUP_ITERS": "0", "SOLVER.LOG_PERIOD": "1", "TEST.IMS_PER_BATCH": "16",
        "OUTPUT_DIR": str(out),
    }
    demo = Path(__file__).resolve().parents[2] / "configs" / "Demo" / "synthetic_cross_domain.yml"
    cfg = setup_cfg(str(demo),
                    [x for kv in opts.items() for x in kv])
    history = DefaultTrainer(cfg).fit()
    final = history["epoch 1"]["SyntheticB"]
    assert 0.0 <= final["mAP"] <= 1.0 and final["num_queries"] > 0
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "iteration" in r] == [1, 2]
    assert (out / "model_final.pth").is_file()
