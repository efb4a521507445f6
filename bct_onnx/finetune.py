"""Fine-tuning a checkpoint on a GLUE task on the CPU, cached so a second run reuses the result.

Needs the ``export`` extra (torch and transformers). The loop is plain PyTorch: AdamW with a
linear warm-up and decay, dynamic padding per batch, and fixed seeds, so the same config gives
the same checkpoint. The cache key is a hash of the config and the source model folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bct_onnx.errors import BctError
from bct_onnx.glue import TaskKind, get_task, load_glue_split
from bct_onnx.metrics import task_metrics
from bct_onnx.text import encode_examples

logger = logging.getLogger(__name__)

DONE_FILE = "bct_onnx_finetune.json"  # written last: its presence marks a complete checkpoint


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Hyperparameters of one fine-tuning run."""

    task: str
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 42
    train_limit: int | None = None  # use only the first N training examples

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0 or self.max_length < 8:
            raise ValueError("epochs, batch size and learning rate must be positive, max length at least 8")


def cache_dir() -> Path:
    """Return the folder for cached checkpoints and exports: $BCT_CACHE_DIR or ~/.cache/bct-onnx."""
    return Path(os.environ.get("BCT_CACHE_DIR", Path.home() / ".cache" / "bct-onnx"))


def finetune(
    model_dir: str | os.PathLike,
    config: FinetuneConfig,
    *,
    glue_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fine-tune ``model_dir`` on ``config.task`` and return the checkpoint folder.

    A checkpoint cached for the same model and config is returned without training.
    """
    target = cache_dir() / "finetuned" / f"{get_task(config.task).name}-{_cache_key(model_dir, config)}"
    if (target / DONE_FILE).is_file():
        logger.info("reusing the fine-tuned checkpoint in %s", target)
        return target
    torch, transformers = _import_training()
    task = get_task(config.task)
    train = load_glue_split(task, "train", glue_dir=glue_dir, limit=config.train_limit)
    dev = load_glue_split(task, "dev", glue_dir=glue_dir)

    torch.manual_seed(config.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = _classifier(transformers, model_dir, task)
    _train(torch, transformers, model, tokenizer, train, config, progress)
    metrics = evaluate_torch(torch, model, tokenizer, dev, task, config)
    logger.info("%s dev metrics after fine-tuning: %s", task.name, metrics)

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / DONE_FILE).write_text(json.dumps({"config": asdict(config), "dev_metrics": metrics}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _import_training():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise BctError("fine-tuning needs torch and transformers: pip install 'bct-onnx[export]'") from error
    return torch, transformers


def _cache_key(model_dir: str | os.PathLike, config: FinetuneConfig) -> str:
    text = json.dumps({"model": str(Path(model_dir).resolve()), **asdict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _classifier(transformers, model_dir: str | os.PathLike, task):
    if task.kind is TaskKind.REGRESSION:
        return transformers.AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=1, problem_type="regression"
        )
    return transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=task.num_labels)


def _batches(tokenizer, examples, batch_size: int, max_length: int, order: np.ndarray):
    """Yield tokenized batches padded to their own longest example (dynamic padding)."""
    for start in range(0, len(order), batch_size):
        chunk = [examples[index] for index in order[start : start + batch_size]]
        encoded = encode_examples(tokenizer, chunk, max_length=max_length, return_tensors="pt")
        yield encoded, [example.label for example in chunk]


def _train(torch, transformers, model, tokenizer, train, config: FinetuneConfig, progress) -> None:
    steps_per_epoch = -(-len(train) // config.batch_size)
    total_steps = max(1, int(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    generator = np.random.default_rng(config.seed)
    model.train()
    step = 0
    while step < total_steps:
        order = generator.permutation(len(train))
        for encoded, labels in _batches(tokenizer, train, config.batch_size, config.max_length, order):
            dtype = torch.float32 if isinstance(labels[0], float) else torch.long
            loss = model(**encoded, labels=torch.tensor(labels, dtype=dtype)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if progress is not None:
                progress(step, total_steps)
            if step >= total_steps:
                break
    model.eval()


def evaluate_torch(torch, model, tokenizer, examples, task, config: FinetuneConfig) -> dict[str, float]:
    """Return the task metrics of the PyTorch model on ``examples``."""
    predictions = []
    with torch.no_grad():
        for encoded, _ in _batches(tokenizer, examples, 64, config.max_length, np.arange(len(examples))):
            logits = model(**encoded).logits.numpy()
            predictions.append(logits[:, 0] if task.kind is TaskKind.REGRESSION else logits.argmax(axis=-1))
    gold = np.array([example.label for example in examples])
    return task_metrics(task, np.concatenate(predictions), gold)
