"""DefaultTrainer used as a library (no train_net.py, no default_setup)."""

import json
from pathlib import Path

import pytest
import torch

from reid_pbn.engine import DefaultTrainer, setup_cfg


def tiny_cfg(tmp_path, out, **over):
    """A seconds-long CPU job on two tiny synthetic domains."""
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
        **over,
    }
    demo = Path(__file__).resolve().parents[2] / "configs" / "Demo" / "synthetic_cross_domain.yml"
    return setup_cfg(str(demo), [x for kv in opts.items() for x in kv])


def test_trainer_from_library_creates_output_dir_and_evaluates(tmp_path):
    out = tmp_path / "not" / "yet" / "there"
    cfg = tiny_cfg(tmp_path, out)
    history = DefaultTrainer(cfg).fit()
    final = history["epoch 1"]["SyntheticB"]
    assert 0.0 <= final["mAP"] <= 1.0 and final["num_queries"] > 0
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "iteration" in r] == [1, 2]
    assert (out / "model_final.pth").is_file()


def test_non_finite_loss_stops_training_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, out, **{"SOLVER.MAX_EPOCH": "3", "SOLVER.CHECKPOINT_PERIOD": "1",
                                     "DATASETS.TESTS": "()"})
    trainer = DefaultTrainer(cfg)
    forward, calls = trainer.model.forward, []

    def diverging_forward(batch):
        calls.append(1)
        losses = forward(batch)
        if len(calls) == 3:  # first iteration of epoch 2
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    trainer.model.forward = diverging_forward
    with pytest.raises(FloatingPointError, match="non-finite at iteration 3"):
        trainer.fit()
    assert (out / "last_checkpoint").read_text().strip() == "model_0001.pth"
    saved = torch.load(out / "model_0001.pth", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (out / "model_final.pth").exists()


def test_launch_reports_user_errors_without_traceback(caplog):
    from argparse import Namespace

    from reid_pbn.data.datasets.bases import DatasetNotFoundError
    from reid_pbn.engine.launch import launch

    def main(args):
        raise DatasetNotFoundError("Market1501 not found under /nowhere; expected tree ...")

    args = Namespace(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    with caplog.at_level("ERROR", logger="reid_pbn"):
        assert launch(main, args) == 1
    assert "DatasetNotFoundError: Market1501 not found under /nowhere" in caplog.text

    def crash(args):
        raise KeyError("a bug")  # not a user error: the traceback is what a developer needs

    with pytest.raises(KeyError):
        launch(crash, args)


def test_epoch_length_is_the_batch_samplers(tmp_path):
    # Without SOLVER.ITERS_PER_EPOCH the sampler's own length (about one pass over the
    # identities' K-image chunks) is the epoch; num_images // IMS_PER_BATCH would disagree.
    cfg = tiny_cfg(tmp_path, tmp_path / "run", **{"SOLVER.ITERS_PER_EPOCH": "0",
                                                  "DATASETS.TESTS": "()"})
    trainer = DefaultTrainer(cfg)
    sampler = trainer.data_loader.batch_sampler
    assert trainer.iters_per_epoch == len(sampler)
    trainer.train(0, 1)
    assert trainer.iter == len(sampler)
