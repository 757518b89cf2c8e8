"""Random architectures are well-formed, run forward, are reproducible, and export."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from netsculpt._inputs import split_inputs
from netsculpt.errors import InputError, UnknownNameError
from netsculpt.testing.random_arch import (
    CLASSES,
    ArchSpec,
    Op,
    RandomNet,
    Shape,
    build_arch,
    random_architectures,
    random_specs,
)

FAST = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(random_architectures())
def test_drawn_models_run_forward(arch: tuple[torch.nn.Module, torch.Tensor]) -> None:
    model, example_inputs = arch
    assert isinstance(model, RandomNet)
    assert not model.training
    with torch.no_grad():
        out = model(example_inputs)
    assert out.shape == (example_inputs.shape[0], CLASSES)
    assert torch.isfinite(out).all()


@FAST
@given(random_specs())
def test_spec_shapes_match_the_values_computed(spec: ArchSpec) -> None:
    model, x = build_arch(spec)
    values = [x]
    with torch.no_grad():
        for index, op in enumerate(spec.ops):
            values.extend(model._run(index, op, [values[i] for i in op.inputs]))
    shapes = spec.shapes()
    assert len(values) == len(shapes)
    for value, shape in zip(values, shapes, strict=True):
        channel_dim = -1 if shape.domain == "sequence" else 1
        assert value.shape[channel_dim] == shape.channels
        assert value.dim() == {"image": 4, "vector": 2, "sequence": 3}[shape.domain]
        if shape.domain == "image":
            assert value.shape[2:] == (shape.size, shape.size)
    # every computed value reaches the head
    used = {i for op in spec.ops for i in op.inputs} | set(spec.leaves())
    assert used == set(range(len(shapes)))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(random_specs())
def test_same_spec_gives_same_model_and_inputs(spec: ArchSpec) -> None:
    torch.manual_seed(1)
    model_a, x_a = build_arch(spec)
    state = torch.random.get_rng_state()
    model_b, x_b = build_arch(spec)
    assert torch.equal(torch.random.get_rng_state(), state), (
        "building must not touch the global RNG"
    )
    torch.testing.assert_close(x_a, x_b)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(random_specs(uneven_splits=False, domains=("image",)))
def test_options_restrict_what_is_drawn(spec: ArchSpec) -> None:
    assert spec.input.domain == "image"
    for op in spec.ops:
        if op.kind == "split":
            assert op.get("chunk") is True


@settings(max_examples=8, deadline=None, derandomize=True)
@given(random_architectures(max_ops=6))
def test_drawn_models_are_captured_by_torch_export(
    arch: tuple[torch.nn.Module, torch.Tensor],
) -> None:
    model, example_inputs = arch
    args, kwargs = split_inputs(example_inputs)
    exported = torch.export.export(model, args, kwargs, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(*args), model(*args))


def test_the_op_mix_covers_the_advertised_kinds() -> None:
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(random_specs())
    def collect(spec: ArchSpec) -> None:
        shapes = spec.shapes()
        for op in spec.ops:
            seen.add(op.kind)
            if op.kind == "conv" and op.get("groups") > 1:
                depthwise = op.get("groups") == shapes[op.inputs[0]].channels
                seen.add("depthwise" if depthwise else "grouped")
            if op.kind in ("merge", "norm"):
                seen.add(f"{op.kind}:{op.get('fn')}")

    collect()
    expected = {
        "conv", "conv_transpose", "linear", "norm:batch", "norm:group", "norm:layer", "act",
        "merge:add", "concat", "split", "pool", "flatten", "mean", "depthwise", "grouped",
    }  # fmt: skip
    assert expected <= seen, f"never drawn: {sorted(expected - seen)}"


def test_repr_shows_the_wiring() -> None:
    spec = ArchSpec(
        input=Shape("image", 3, 4),
        ops=(
            Op(
                "conv",
                (0,),
                (("cout", 4), ("kernel", 3), ("stride", 1), ("groups", 1), ("bias", False)),
            ),
            Op("merge", (1, 1), (("fn", "add"),)),
        ),
        seed=0,
    )
    model, x = build_arch(spec)
    text = repr(model)
    assert "op0: conv[0] cout=4" in text
    assert "op1: merge[1, 1] fn=add" in text
    assert model(x).shape == (2, CLASSES)


def test_bad_options_are_refused_with_the_fix() -> None:
    with pytest.raises(UnknownNameError, match=r"'video'.*image, vector, sequence"):
        random_architectures(domains=("image", "video"))
    with pytest.raises(InputError, match=r"max_ops=0"):
        random_architectures(max_ops=0)
