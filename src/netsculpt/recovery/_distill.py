"""Distillation losses: logits (KL), embeddings (cosine + MSE) and hidden states (MSE)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._inputs import ExampleInputs, flatten_outputs
from netsculpt.errors import TrainingError

__all__ = ["distill_loss", "hidden_states_of", "wants_hidden_kwarg"]


def wants_hidden_kwarg(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers model that returns ``hidden_states`` on request."""
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "output_hidden_states")


class _Tap:
    """Hidden states of one forward pass: transformers ``hidden_states`` or hooked modules."""

    def __init__(self, named: bool = False) -> None:
        self.hooked: dict[str, torch.Tensor] = {}
        self.named = named

    def collect(self, outputs: Any) -> dict[str, torch.Tensor] | list[torch.Tensor]:
        if self.named:
            return dict(self.hooked)
        states = getattr(outputs, "hidden_states", None)
        if states is None and isinstance(outputs, Mapping):
            states = outputs.get("hidden_states")
        if states is not None:
            return list(states)
        return dict(self.hooked)


@contextmanager
def hidden_states_of(
    model: nn.Module, hook_children: bool, names: Sequence[str] | None = None
) -> Iterator[_Tap]:
    """Collect the outputs of the modules ``names`` (their first tensor output) or, when
    ``names`` is None and ``hook_children`` is set, of ``model``'s top-level children."""
    tap = _Tap(named=names is not None)
    handles = []
    if names is not None:
        for name in names:

            def first(_: nn.Module, __: Any, output: Any, name: str = name) -> None:
                found = flatten_outputs(output)
                if found:
                    tap.hooked[name] = found[0]

            handles.append(model.get_submodule(name).register_forward_hook(first))
    elif hook_children:
        for name, child in model.named_children():

            def keep(_: nn.Module, __: Any, output: Any, name: str = name) -> None:
                if isinstance(output, torch.Tensor):
                    tap.hooked[name] = output

            handles.append(child.register_forward_hook(keep))
    try:
        yield tap
    finally:
        for handle in handles:
            handle.remove()


def _main_output(outputs: Any, kind: str) -> tuple[torch.Tensor, str]:
    """The tensor to match and its kind ("logits" or "embeddings")."""
    for key, guess in (("logits", "logits"), ("last_hidden_state", "embeddings")):
        value = getattr(outputs, key, None)
        if value is None and isinstance(outputs, Mapping):
            value = outputs.get(key)
        if isinstance(value, torch.Tensor):
            return value, guess if kind == "auto" else kind
    found = flatten_outputs(outputs)
    if not found:
        raise TrainingError(
            f"distill: the model returned no tensor ({type(outputs).__name__}); return logits "
            f"or hidden states"
        )
    return found[0], "logits" if kind == "auto" else kind


def _mask_of(inputs: ExampleInputs, like: torch.Tensor) -> torch.Tensor | None:
    """The attention mask ``[batch, seq]`` when the inputs carry one matching ``like``."""
    if not isinstance(inputs, Mapping) or like.dim() != 3:
        return None
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(like.shape[:2]):
        return mask.to(like.dtype)
    return None


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` ``[batch, seq]`` (or any shape when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _embedding_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    cosine = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    squared = (student - teacher).pow(2).mean(dim=-1)
    return _masked_mean(cosine, mask) + _masked_mean(squared, mask)


def _pooled(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One unit vector per example: the (masked) mean over the sequence when there is one."""
    if values.dim() == 3:
        if mask is None:
            values = values.mean(1)
        else:
            values = (values * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(1.0)
    return F.normalize(values.reshape(values.shape[0], -1), dim=-1)


def _relation_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Embeddings of different widths (a pruned residual width): match how the examples of
    the batch relate, the cosine similarity of every pair of pooled embeddings."""
    s, t = _pooled(student, mask), _pooled(teacher, mask)
    return (s @ s.T - t @ t.T).pow(2).sum(-1).mean()


def _kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    classes = student.shape[-1]
    s = F.log_softmax(student.reshape(-1, classes).float() / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def _check_named_states(
    student: dict[str, torch.Tensor] | list[torch.Tensor],
    teacher: dict[str, torch.Tensor] | list[torch.Tensor],
    names: Sequence[str],
) -> None:
    """Every layer of ``hidden_layers`` gave a tensor in both models, of the same shape."""
    if not (isinstance(student, dict) and isinstance(teacher, dict)):
        return
    for name in names:
        for what, states in (("student", student), ("teacher", teacher)):
            if name not in states:
                raise TrainingError(
                    f"distill: hidden_layers names {name!r}, but that module of the {what} gave "
                    f"no tensor output (or did not run in the forward pass); name a module "
                    f"that returns a tensor"
                )
        if student[name].shape != teacher[name].shape:
            raise TrainingError(
                f"distill: hidden layer {name!r} gives shape {tuple(student[name].shape)} in "
                f"the student but {tuple(teacher[name].shape)} in the teacher; name layers "
                f"whose outputs were not pruned (e.g. block outputs on the residual stream)"
            )


def _hidden_loss(
    student: dict[str, torch.Tensor] | list[torch.Tensor],
    teacher: dict[str, torch.Tensor] | list[torch.Tensor],
    inputs: ExampleInputs,
) -> torch.Tensor | None:
    """Mean MSE over pairs of hidden states with equal shapes; None when no pair matches."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    if isinstance(student, dict) and isinstance(teacher, dict):
        pairs = [(student[k], teacher[k]) for k in student if k in teacher]
    elif isinstance(student, list) and isinstance(teacher, list) and student and teacher:
        # student layer i <-> teacher layer at the same relative depth (layer-dropped students)
        last_s, last_t = len(student) - 1, len(teacher) - 1
        for i, state in enumerate(student):
            j = round(i * last_t / last_s) if last_s else last_t
            pairs.append((state, teacher[j]))
    terms = []
    for s, t in pairs:
        if s.shape != t.shape:
            continue
        squared = (s.float() - t.float()).pow(2)
        mask = _mask_of(inputs, s)
        terms.append(
            _masked_mean(squared.mean(dim=-1), mask) if mask is not None else squared.mean()
        )
    return torch.stack(terms).mean() if terms else None


def distill_loss(
    student_out: Any,
    teacher_out: Any,
    *,
    inputs: ExampleInputs,
    targets: Any,
    task_loss: Callable[[Any, Any], torch.Tensor],
    kind: str,
    temperature: float,
    alpha: float,
    hidden_weight: float,
    student_hidden: dict[str, torch.Tensor] | list[torch.Tensor],
    teacher_hidden: dict[str, torch.Tensor] | list[torch.Tensor],
    hidden_layers: Sequence[str] | None = None,
) -> torch.Tensor:
    """``alpha * match + (1 - alpha) * task_loss + hidden_weight * hidden`` (see ns.distill).

    With ``hidden_layers`` named, each of them must have given outputs of equal shapes.
    """
    s_main, s_kind = _main_output(student_out, kind)
    t_main, _ = _main_output(teacher_out, kind)
    relational = (
        s_kind == "embeddings"
        and s_main.dim() == t_main.dim()
        and s_main.shape[:-1] == t_main.shape[:-1]
        and s_main.shape[-1] != t_main.shape[-1]
    )
    if s_main.shape != t_main.shape and not relational:
        raise TrainingError(
            f"distill: the teacher's output has shape {tuple(t_main.shape)} but the "
            f"student's has shape {tuple(s_main.shape)}; they must match (keep the output "
            f"layer unpruned, e.g. exclude it from the plan, or use a teacher with the same "
            f"outputs)"
        )
    t_main = t_main.detach()
    if s_kind == "logits":
        match = _kl_loss(s_main, t_main, temperature)
    elif relational:
        mask = _mask_of(inputs, s_main)
        match = _relation_loss(s_main.float(), t_main.float(), mask)
    else:
        match = _embedding_loss(s_main.float(), t_main.float(), _mask_of(inputs, s_main))
    loss = match
    if targets is not None and alpha < 1.0:
        loss = alpha * match + (1.0 - alpha) * task_loss(student_out, targets)
    if hidden_weight > 0:
        if hidden_layers is not None:
            _check_named_states(student_hidden, teacher_hidden, hidden_layers)
        hidden = _hidden_loss(student_hidden, teacher_hidden, inputs)
        if hidden is not None:
            loss = loss + hidden_weight * hidden
    return loss
