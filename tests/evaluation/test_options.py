"""Typed re-ranking and query-expansion options: one default each, the dict form still works."""

import dataclasses
import inspect

import numpy as np
import pytest
from eval_reference import clustered_features

from reid_pbn.config import get_cfg
from reid_pbn.evaluation import (
    KReciprocalReRanker,
    QueryExpansionOptions,
    RerankOptions,
    evaluate,
    evaluation_kwargs_from_config,
    query_expansion,
    re_ranking,
)


def test_defaults_are_written_once():
    assert RerankOptions() == RerankOptions(k1=20, k2=6, lambda_value=0.3)
    assert QueryExpansionOptions() == QueryExpansionOptions(qe_times=1, qe_k=5, alpha=3.0)
    # The functions that take the settings one by one default to the dataclass fields.
    for fn, options in ((KReciprocalReRanker, RerankOptions()), (re_ranking, RerankOptions()),
                        (query_expansion, QueryExpansionOptions())):
        params = inspect.signature(fn).parameters
        for field, value in dataclasses.asdict(options).items():
            assert params[field].default == value, (fn, field)
    # The config's defaults are the same values.
    t = get_cfg().TEST
    assert RerankOptions() == RerankOptions(t.RERANK.K1, t.RERANK.K2, t.RERANK.LAMBDA)
    assert QueryExpansionOptions() == QueryExpansionOptions(t.AQE.QE_TIME, t.AQE.QE_K, t.AQE.ALPHA)


def test_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RerankOptions().k1 = 3
    with pytest.raises(ValueError, match="k1 and k2"):
        RerankOptions(k1=0)
    with pytest.raises(ValueError, match="lambda"):
        RerankOptions(lambda_value=1.5)
    with pytest.raises(ValueError, match="qe_k"):
        QueryExpansionOptions(qe_k=0)
    with pytest.raises(ValueError, match="Unknown rerank option.*'k3'"):
        RerankOptions.coerce({"k3": 2})


def test_coerce_forms():
    assert RerankOptions.coerce(None) is None and RerankOptions.coerce(False) is None
    assert RerankOptions.coerce(True) == RerankOptions()
    assert RerankOptions.coerce({"k1": 10, "lambda": 0.5}) == RerankOptions(10, 6, 0.5)
    assert RerankOptions(10, 6, 0.5).as_dict() == {"k1": 10, "k2": 6, "lambda": 0.5}
    assert QueryExpansionOptions.coerce({"qe_k": 3}) == QueryExpansionOptions(qe_k=3)


def test_evaluate_takes_the_dict_form_and_the_dataclass_alike():
    rng = np.random.default_rng(0)
    feats, pids = clustered_features(rng, 40, 8, 5)
    cams = np.arange(40) % 3
    q, g, qp, gp, qc, gc = feats[:10], feats[10:], pids[:10], pids[10:], cams[:10], cams[10:]
    as_dict = evaluate(q, g, qp, gp, qc, gc, rerank={"k1": 8, "k2": 3, "lambda": 0.4},
                       aqe={"qe_times": 1, "qe_k": 2, "alpha": 3.0})
    typed = evaluate(q, g, qp, gp, qc, gc, rerank=RerankOptions(8, 3, 0.4),
                     aqe=QueryExpansionOptions(qe_k=2))
    assert as_dict["rerank"] and as_dict["aqe"]
    assert as_dict["mAP"] == typed["mAP"] and (as_dict["cmc"] == typed["cmc"]).all()


def test_config_gives_the_dict_form():
    cfg = get_cfg()
    cfg.TEST.RERANK.ENABLED = True
    kwargs = evaluation_kwargs_from_config(cfg)
    assert RerankOptions.coerce(kwargs["rerank"]) == RerankOptions()
    assert kwargs["aqe"] is None
