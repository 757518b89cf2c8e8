"""The ``tinylm`` task: a small Llama-style language model of Python's docstrings.

The model is a transformers ``LlamaForCausalLM`` built from a config (no download): by
default hidden size 256, 4 layers, 8 query heads sharing 2 key/value heads (grouped-query
attention), MLP width 688, **untied** input and output embeddings, 2.9 M parameters. Its
tokens are bytes (vocabulary 256, no special tokens: every sequence is a full window of
UTF-8 bytes, so nothing is padded and no tokenizer is needed).

The text is the docstrings of Python's standard library, split by source module into three
parts that share no module, no file and no identical sequence
(:mod:`netsculpt.tasks._tinylm_text`):

* **train**: training, calibration and distillation batches, example inputs;
* **validation**: ``evaluate(model)``, what every choice reads;
* **test**: ``evaluate(model, "test")``, only for reported figures.

netsculpt trains the model itself on first use (:meth:`TinyLMTask.pretrained_model`:
AdamW, seeded, ``TinyLMConfig.steps`` steps, a few minutes on one CPU thread with the
defaults) and caches it in netsculpt's cache folder (``$NETSCULPT_CACHE``, else
``~/.cache/netsculpt``) as ``tinylm-<key>.safetensors`` plus ``tinylm-<key>.json``; the key
hashes the config and the text, so another config or another Python's text trains its own
model. Later uses read the cache (tensors and JSON only; nothing is unpickled or run).

**Score.** A language model is judged by its perplexity on held-out text (lower is better),
but netsculpt's tasks are scored higher-is-better (a search maximises the score), so
``evaluate`` returns the **negative perplexity**; :meth:`TinyLMTask.perplexity` gives the
perplexity itself. Perplexity is ``exp`` of the mean next-byte cross-entropy over the first
``n_eval`` windows of the split (every byte after the first of each window is predicted);
a model that guesses uniformly scores 256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_int
from netsculpt._inputs import ExampleInputs, flatten_outputs
from netsculpt.errors import InputError, SaveLoadError, TrainingError
from netsculpt.tasks._common import cache_folder
from netsculpt.tasks._tinylm_text import LMSplits, lm_splits
from netsculpt.tasks.base import Split, Task, check_split

if TYPE_CHECKING:
    from netsculpt.recovery.config import TrainConfig

__all__ = [
    "VOCAB_SIZE",
    "TinyLMConfig",
    "TinyLMTask",
    "build_tinylm",
    "lm_loss",
    "next_byte_loss",
    "pretrained_tinylm",
]

#: Byte-level vocabulary: one token per byte value.
VOCAB_SIZE = 256
_CACHE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TinyLMConfig:
    """The tinylm model and its training, as one value (part of the cache key).

    Args:
        hidden_size: residual width.
        num_layers: decoder layers.
        num_heads: query heads; ``hidden_size`` must divide into them.
        num_kv_heads: key/value heads (grouped-query attention); divides ``num_heads``.
        intermediate_size: MLP width.
        tie_embeddings: share the input embedding and the output projection.
        seq_len: bytes per sequence (the model is trained and scored on this length).
        steps: AdamW steps of the first training.
        batch_size: sequences per training step.
        lr: peak learning rate (linear warm-up over the first 5 % of steps, then cosine
            decay to a tenth).
        seed: seeds the initial weights and the order of training batches.
    """

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int = 688
    tie_embeddings: bool = False
    seq_len: int = 128
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "tie_embeddings":
                if not isinstance(value, bool):
                    raise InputError(f"TinyLMConfig(tie_embeddings={value!r}): pass True or False")
            elif field.name == "lr":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not (0 < value < 1)
                    or not math.isfinite(value)
                ):
                    raise InputError(
                        f"TinyLMConfig(lr={value!r}): the learning rate must be a number in "
                        f"(0, 1), e.g. lr=3e-3"
                    )
            else:
                minimum = 0 if field.name == "seed" else 1
                try:
                    check_int(value, field.name, minimum=minimum)
                except InputError as exc:
                    raise InputError(f"TinyLMConfig: {exc}") from None
        if self.hidden_size % self.num_heads:
            raise InputError(
                f"TinyLMConfig: hidden_size={self.hidden_size} is not a multiple of "
                f"num_heads={self.num_heads}; pick sizes that divide, e.g. 256 and 8"
            )
        if self.num_heads % self.num_kv_heads:
            raise InputError(
                f"TinyLMConfig: num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}; each key/value head serves a whole group "
                f"of query heads, e.g. num_heads=8, num_kv_heads=2"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise InputError(
                f"TinyLMConfig: the head size hidden_size/num_heads = "
                f"{self.hidden_size // self.num_heads} is odd; rotary position embeddings "
                f"need an even head size"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TinyLMConfig:
        """The config written by :meth:`to_dict`; unknown or missing keys are refused."""
        if not isinstance(data, dict):
            raise InputError(f"TinyLMConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"TinyLMConfig.from_dict: unknown keys {unknown}; the fields are {sorted(known)}"
            )
        return cls(**data)


def build_tinylm(config: TinyLMConfig | None = None) -> nn.Module:
    """A ``LlamaForCausalLM`` of ``config`` with initial weights seeded by ``config.seed``,
    in eval mode (``use_cache=False``; sdpa attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config or TinyLMConfig()
    hf_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=max(config.seq_len, 128),
        tie_word_embeddings=config.tie_embeddings,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="sdpa",  # type: ignore[call-arg]  # a PretrainedConfig kwarg
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(hf_config)
    return model.eval()


def _logits(outputs: Any) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, dict):
        logits = outputs.get("logits")
    if logits is None:
        found = flatten_outputs(outputs)
        if not found:
            raise TrainingError(
                f"tinylm: the model returned no tensor ({type(outputs).__name__}); a "
                f"language model returns logits [batch, seq, {VOCAB_SIZE}]"
            )
        logits = found[0]
    if not (isinstance(logits, torch.Tensor) and logits.dim() == 3):
        raise TrainingError(
            f"tinylm: the model's logits have shape {tuple(getattr(logits, 'shape', ()))}, "
            f"not [batch, seq, vocab]; use a causal language model"
        )
    return logits


def lm_loss(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross-entropy (nats) of a model's logits against ``targets`` [B, T]."""
    logits = _logits(outputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def next_byte_loss(outputs: Any, batch: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each byte of ``batch`` [B, T] from the bytes before it.

    The ``loss_fn`` for data-driven importance on calibration batches, which hold inputs
    only: ``ns.plan(model, x, config, calib=task.calib_batches(), loss_fn=next_byte_loss)``
    (``"taylor"`` otherwise differentiates netsculpt's default, the mean squared logit).
    """
    logits = _logits(outputs)
    return lm_loss(logits[:, :-1], batch[:, 1:])


def _windows_stream(windows: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(windows))
    while True:
        order = torch.randperm(len(windows), generator=generator)
        for start in range(0, len(windows) - size + 1, size):
            yield windows[order[start : start + size]]


def _train(config: TinyLMConfig, splits: LMSplits) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh model of ``config`` on the train windows; return it and a log."""
    model = build_tinylm(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, config.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    stream = _windows_stream(splits.train, config.batch_size, config.seed)
    started = time.perf_counter()
    losses = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_at(step)
        batch = next(stream)
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        if not torch.isfinite(loss):
            raise TrainingError(
                f"tinylm training diverged at step {step} (loss {float(loss)}); lower "
                f"TinyLMConfig(lr={config.lr})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    tail = losses[-max(1, len(losses) // 10) :]
    log = {
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": round(sum(tail) / len(tail), 4),
        "threads": torch.get_num_threads(),
    }
    return model.eval(), log


def _cache_key(config: TinyLMConfig, fingerprint: str) -> str:
    blob = json.dumps(
        {"config": config.to_dict(), "text": fingerprint, "version": _CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_paths(
    config: TinyLMConfig, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """The ``(weights, JSON)`` files of ``config``'s model in the cache folder."""
    key = _cache_key(config, lm_splits(config.seq_len).fingerprint)
    folder = cache_folder(cache_dir)
    return folder / f"tinylm-{key}.safetensors", folder / f"tinylm-{key}.json"


def pretrained_tinylm(
    config: TinyLMConfig | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> nn.Module:
    """The trained tinylm of ``config`` (default :class:`TinyLMConfig`), in eval mode.

    Read from the cache folder when trained before, else trained now (minutes with the
    defaults; seconds for tiny configs) and written there (atomically).

    Raises:
        SaveLoadError: the cached files cannot be read, or their JSON describes another
            config or text; the message names the file (delete it to train again).
    """
    from safetensors.torch import load_model, save_model

    config = config or TinyLMConfig()
    splits = lm_splits(config.seq_len)
    weights, meta = cache_paths(config, cache_dir=cache_dir)
    expected = {"config": config.to_dict(), "text": splits.fingerprint, "version": _CACHE_VERSION}
    if weights.exists() and meta.exists():
        try:
            stored = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SaveLoadError(
                f"the cached tinylm description {meta} is not readable JSON ({exc}); delete "
                f"{meta} and {weights.name} and netsculpt will train the model again"
            ) from None
        got = {k: stored.get(k) for k in expected} if isinstance(stored, dict) else stored
        if got != expected:
            raise SaveLoadError(
                f"the cached tinylm {meta} describes another model or text than the one asked "
                f"for (config/text/version differ: {got!r} vs {expected!r}); delete {meta} and "
                f"{weights.name} and netsculpt will train the model again"
            )
        model = build_tinylm(config)
        try:
            load_model(model, str(weights), strict=True)
        except Exception as exc:
            raise SaveLoadError(
                f"the cached tinylm weights {weights} could not be loaded ({exc}); delete it "
                f"and {meta.name} and netsculpt will train the model again"
            ) from None
        return model.eval()
    model, log = _train(config, splits)
    weights.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    tmp_weights = weights.with_name(weights.name + suffix)
    tmp_meta = meta.with_name(meta.name + suffix)
    save_model(model, str(tmp_weights), metadata={"netsculpt": "tinylm"})
    tmp_meta.write_text(json.dumps({**expected, **log}, indent=2, sort_keys=True), "utf-8")
    os.replace(tmp_weights, weights)  # weights first: a reader needs both files
    os.replace(tmp_meta, meta)
    return model.eval()


class TinyLMTask(Task):
    """Predict the next byte of Python docstrings; the score is minus the perplexity.

    ``evaluate(model)`` returns ``-perplexity`` on the first ``n_eval`` validation windows
    (higher is better, as every task's score), ``evaluate(model, "test")`` on the test
    windows; :meth:`perplexity` returns the perplexity itself.

    Model inputs are byte ids ``[batch, seq_len]`` (int64, a plain tensor); training
    batches pair them with the next bytes as targets.

    Args:
        config: the model and its first training (:class:`TinyLMConfig`); a smaller one
            (e.g. ``TinyLMConfig(hidden_size=64, num_layers=2, steps=30)``) trains in
            seconds.
        n_eval: windows scored per split (at most the smaller of validation and test).
        batch_size: batch size of ``example_inputs`` and ``calib_batches``.
        eval_batch_size: windows per forward pass in :meth:`perplexity`.
        cache_dir: the cache folder (default ``$NETSCULPT_CACHE`` or ``~/.cache/netsculpt``).
    """

    name = "tinylm"

    def __init__(
        self,
        config: TinyLMConfig | None = None,
        *,
        n_eval: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if config is not None and not isinstance(config, TinyLMConfig):
            raise InputError(
                f"TinyLMTask(config=...) needs a TinyLMConfig, got {type(config).__name__}; "
                f"e.g. TinyLMConfig(steps=100)"
            )
        for option, value in (
            ("n_eval", n_eval),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            try:
                check_int(value, option, minimum=1)
            except InputError as exc:
                raise InputError(f"TinyLMTask: {exc}") from None
        self.config = config or TinyLMConfig()
        self.splits = lm_splits(self.config.seq_len)
        most = min(len(self.splits.validation), len(self.splits.test))
        if n_eval > most:
            raise InputError(
                f"TinyLMTask(n_eval={n_eval}) is more than this Python's docstrings give at "
                f"seq_len={self.config.seq_len}: {len(self.splits.validation)} validation and "
                f"{len(self.splits.test)} test windows; pass n_eval <= {most}"
            )
        self.n_eval = n_eval
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = cache_dir

    def pretrained_model(self) -> nn.Module:
        """The trained model of ``self.config`` (see :func:`pretrained_tinylm`)."""
        return pretrained_tinylm(self.config, cache_dir=self.cache_dir)

    def recovery_config(self, *, distill: bool) -> TrainConfig:
        """Recovery recipe: AdamW at 1e-3, 16 windows per step; distillation matches the
        teacher's next-byte distributions (KL at temperature 1) with the true next byte
        (``alpha=0.5``)."""
        from netsculpt.recovery.config import DistillConfig, TrainConfig

        if not distill:
            return TrainConfig(lr=1e-3, batch_size=16)
        return DistillConfig(lr=1e-3, batch_size=16, temperature=1.0, alpha=0.5)

    # -- scoring -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Minus the perplexity on ``split`` (higher is better)."""
        return -self.perplexity(model, split)

    def perplexity(self, model: nn.Module, split: Split = "validation") -> float:
        """``exp`` of the mean next-byte cross-entropy on the first ``n_eval`` windows."""
        windows = self.scored_windows(split)
        device = next(iter(model.parameters()), torch.empty(0)).device
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            with torch.inference_mode():
                for start in range(0, len(windows), self.eval_batch_size):
                    batch = windows[start : start + self.eval_batch_size].to(device)
                    logits = _logits(model(batch[:, :-1])).float()
                    total += float(
                        F.cross_entropy(
                            logits.reshape(-1, logits.shape[-1]),
                            batch[:, 1:].reshape(-1),
                            reduction="sum",
                        )
                    )
                    count += batch[:, 1:].numel()
        finally:
            model.train(was_training)
        return math.exp(min(total / count, 700.0))

    def scored_windows(self, split: Split = "validation") -> torch.Tensor:
        """The ``n_eval`` windows ``[n_eval, seq_len + 1]`` :meth:`perplexity` scores."""
        if check_split(split) == "test":
            return self.splits.test[: self.n_eval]
        return self.splits.validation[: self.n_eval]

    def describe_splits(self) -> dict[str, int]:
        """Windows per split: all train windows, and the ``n_eval`` scored ones."""
        return {"train": len(self.splits.train), "validation": self.n_eval, "test": self.n_eval}

    # -- inputs --------------------------------------------------------------------------
    def example_inputs(self) -> torch.Tensor:
        """Byte ids ``[batch_size, seq_len]`` of the first training windows."""
        return self.splits.train[: self.batch_size, :-1].clone()

    def calib_batches(self, n: int = 4) -> list[ExampleInputs]:
        """``n`` batches shaped like :meth:`example_inputs`, from the train windows."""
        try:
            check_int(n, "n")
        except InputError as exc:
            raise InputError(f"calib_batches: {exc}") from None
        if n < 1:
            raise InputError(f"calib_batches needs n >= 1, got n={n}; ask for at least one batch")
        size, train = self.batch_size, self.splits.train
        rows = torch.arange(n * size) % len(train)
        return [train[rows[i * size : (i + 1) * size], :-1].clone() for i in range(n)]

    def train_batches(
        self, *, batch_size: int = 16, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless ``(byte ids, next bytes)`` batches ``[batch_size, seq_len]`` from the
        train windows, reshuffled each epoch; the order depends only on ``seed``."""
        check_int(batch_size, "batch_size", minimum=1)
        return ((w[:, :-1], w[:, 1:]) for w in _windows_stream(self.splits.train, batch_size, seed))

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Mean next-byte cross-entropy of the logits against ``targets`` ``[batch, seq]``."""
        if not isinstance(targets, torch.Tensor) or targets.dim() != 2:
            raise TrainingError(
                f"TinyLMTask.loss needs the next bytes [batch, seq] as targets, got "
                f"{type(targets).__name__}; use the batches from TinyLMTask.train_batches"
            )
        return lm_loss(outputs, targets)
