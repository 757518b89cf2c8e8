"""Rotating the residual stream onto its principal axes (SliceGPT): the same function,
channels in order of energy, then residual-width pruning on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import ExampleInputsError, InputError, UnsupportedOperationError
from netsculpt.testing.zoo import build, token_batches

pytest.importorskip("transformers")


def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return call_model(model, inputs).logits


def _calib(inputs: dict[str, Any], n: int = 4) -> list[dict[str, Any]]:
    return token_batches(inputs, n)


def _llama() -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    model, inputs = build("hf_llama_gqa")
    with torch.no_grad():  # trained norms scale their channels unevenly
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model, inputs


def test_the_rotated_model_computes_the_same() -> None:
    model, inputs = _llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    rotated = ns.rotate_residual(model, inputs, _calib(inputs))
    assert model.training and rotated.training  # modes left as they were
    model.eval()
    rotated.eval()
    torch.testing.assert_close(
        _logits(rotated, inputs), _logits(model, inputs), atol=1e-5, rtol=1e-4
    )
    # same architecture, other weights; the norms' scales moved into their readers
    assert [p.shape for p in rotated.parameters()] == [p.shape for p in model.parameters()]
    assert not torch.allclose(rotated.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert torch.equal(rotated.model.layers[0].input_layernorm.weight, torch.ones(64))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_rotated_channels_come_in_order_of_energy() -> None:
    model, inputs = _llama()
    calib = _calib(inputs)
    rotated = ns.rotate_residual(model, inputs, calib)
    moment = torch.zeros(64, 64, dtype=torch.float64)

    def hook(_m: nn.Module, args: Any) -> None:
        x = args[0].detach().double().reshape(-1, 64)
        moment.add_(x.T @ x)

    norms = [m for n, m in rotated.named_modules() if n.endswith("norm")]
    hooks = [m.register_forward_pre_hook(hook) for m in norms]
    with torch.no_grad():
        for batch in calib:
            call_model(rotated, batch)
    for h in hooks:
        h.remove()
    diagonal = moment.diagonal()
    assert bool((diagonal[:-1] >= diagonal[1:] * (1 - 1e-6)).all())  # decreasing energy
    off = moment - torch.diag(diagonal)
    assert float(off.abs().max()) < 1e-6 * float(diagonal[0])  # uncorrelated channels


def test_residual_pruning_after_rotation_is_exact_and_reloads(tmp_path: Path) -> None:
    model, inputs = _llama()
    calib = _calib(inputs)
    rotated = ns.rotate_residual(model, inputs, calib)
    config = ns.PruneConfig(ratio=0.3, residual=True, importance="activation")
    small = ns.prune(rotated, inputs, config, calib=calib)  # verified against rotated
    plan = ns.plan_of(small)
    assert plan is not None and "kept_whole" not in plan.meta
    kept = plan.tensors["model.embed_tokens.weight"][1]
    assert len(kept) == 45 and len(set(kept) & set(range(45))) >= 40  # the high-energy axes
    again = ns.load(ns.save(small, tmp_path / "rotated"))
    torch.testing.assert_close(_logits(again, inputs), _logits(small, inputs), rtol=0, atol=0)
    # and it loses less than the same pruning of the unrotated model, on the calibration text
    plain = ns.prune(model, inputs, config, calib=calib)
    reference = _logits(model, calib[0])
    error = {
        k: float((_logits(m, calib[0]) - reference).pow(2).mean())
        for k, m in (("rotated", small), ("plain", plain))
    }
    assert error["rotated"] < error["plain"]


def test_gemma_norms_fold_unless_the_embedding_is_tied() -> None:
    torch.manual_seed(0)
    model, inputs = build("hf_gemma")  # (1 + weight) norms, LM head tied to the embedding
    rotated = ns.rotate_residual(model, inputs, _calib(inputs))  # weights 0: nothing to fold
    torch.testing.assert_close(
        _logits(rotated, inputs), _logits(model, inputs), atol=1e-5, rtol=1e-4
    )
    assert rotated.lm_head.weight is rotated.model.embed_tokens.weight  # still tied
    with torch.no_grad():
        model.model.norm.weight.uniform_(-0.5, 0.5)
    with pytest.raises(UnsupportedOperationError, match=r"'model\.norm'.*'lm_head'.*tied"):
        ns.rotate_residual(model, inputs, _calib(inputs))


def test_models_it_cannot_rotate_are_refused_by_name() -> None:
    model, inputs = build("hf_gpt2")
    with pytest.raises(UnsupportedOperationError, match=r"LayerNorm.*mean"):
        ns.rotate_residual(model, inputs, _calib(inputs))
    llama, ids = _llama()
    with pytest.raises(UnsupportedOperationError, match=r"residual width is protected"):
        ns.rotate_residual(llama.model, ids, _calib(ids))  # its hidden states are its output


def test_bad_calibration_batches() -> None:
    model, inputs = _llama()
    with pytest.raises(InputError, match=r"rotate_residual needs calibration batches"):
        ns.rotate_residual(model, inputs, None)  # type: ignore[arg-type]
    with pytest.raises(ExampleInputsError, match="list of batches"):
        ns.rotate_residual(model, inputs, inputs)  # type: ignore[arg-type]
