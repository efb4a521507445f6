"""Fine-tuning: a few steps on real GLUE data, the cache, and config checks."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from bct_onnx.export import default_model_dir  # noqa: E402
from bct_onnx.finetune import DONE_FILE, FinetuneConfig, finetune  # noqa: E402
from bct_onnx.glue import GlueDataError  # noqa: E402


@pytest.mark.slow
def test_finetune_caches_checkpoint(tmp_path, monkeypatch, glue_dir):
    monkeypatch.setenv("BCT_CACHE_DIR", str(tmp_path))
    config = FinetuneConfig(task="mrpc", epochs=1, batch_size=8, train_limit=16, max_length=32)
    steps = []
    checkpoint = finetune(default_model_dir(), config, glue_dir=glue_dir, progress=lambda done, total: steps.append((done, total)))

    assert steps[-1] == (2, 2)  # 16 examples in batches of 8, one epoch
    assert checkpoint.parent == tmp_path / "finetuned"
    record = json.loads((checkpoint / DONE_FILE).read_text())
    assert record["config"]["train_limit"] == 16
    assert set(record["dev_metrics"]) == {"f1", "accuracy"}
    assert (checkpoint / "config.json").is_file()

    again = []
    assert finetune(default_model_dir(), config, glue_dir=glue_dir, progress=lambda *step: again.append(step)) == checkpoint
    assert again == []  # the cached checkpoint was reused, with no training step


def test_finetune_config_checks():
    with pytest.raises(ValueError, match="epochs, batch size and learning rate must be positive"):
        FinetuneConfig(task="sst2", epochs=0)
    with pytest.raises(GlueDataError, match="unknown GLUE task .imdb."):
        FinetuneConfig(task="imdb")
