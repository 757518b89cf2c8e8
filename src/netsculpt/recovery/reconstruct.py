"""``ns.reconstruct``: repair a pruned model from calibration data, without training.

Pruning a layer's input width removes columns of its weight; what the removed inputs
contributed is lost. Reconstruction solves for the weights that remain: for every Linear,
Conv1d / Conv2d and transformers ``Conv1D`` whose input width was pruned, it finds the
weight and bias that make the layer's output on the pruned model's inputs closest (least
squares, with a small ridge towards the current weights) to the original layer's output on
the original model's inputs, over the calibration batches::

    import netsculpt as ns

    small = ns.prune(model, example_inputs, ratio=0.5)
    result = ns.reconstruct(small, model, calib=batches)   # small is changed in place
    print(result.describe())                               # relative error per layer

The normal equations ``X^T X`` and ``X^T Y`` are accumulated in float64 over the batches
(convolutions through ``unfold``), then solved with a Cholesky factorisation. With
``sequential=True`` (the default) layers are refitted in execution order and the pruned
model is run again for each, so later layers see what the refitted earlier ones produce.
``method="bias"`` only shifts each layer's bias by its mean output error (bias
compensation); refit falls back to it, per layer, for layers too wide for
``max_features``, grouped or 3-D convolutions and weights tied to another module (the
result says which and why). Layers whose output width was pruned too are matched on the
output rows they kept; ``scope="changed"`` also refits the layers that lost only outputs,
to the inputs that earlier pruning changed.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_model
from netsculpt._inputs import ExampleInputs, describe_inputs, inputs_to, split_inputs
from netsculpt.errors import ExampleInputsError, InputError, NetsculptError, PlanError
from netsculpt.pruning.apply import check_plan, plan_of
from netsculpt.pruning.plan import Plan
from netsculpt.recovery._reconstruct_config import ReconstructConfig

__all__ = [
    "LayerReconstruction",
    "ReconstructConfig",
    "ReconstructResult",
    "reconstruct",
    "reconstruction_of",
]

_RESULT_ATTR = "_netsculpt_reconstruction"
#: sequential mode keeps the original model's layer outputs from one pass when they fit here
_CACHE_BYTES = 2**30


@dataclass(frozen=True)
class LayerReconstruction:
    """What :func:`reconstruct` did to one layer.

    Attributes:
        name: the module's qualified name (the same in both models).
        layer: its class name.
        method: ``"refit"``, ``"bias"`` or ``"skipped"`` (nothing changed).
        reason: why the method differs from the one asked for ("" when it does not).
        features: input features per output (``in_features``; ``in_channels * kernel``).
        rows: calibration rows (tokens, pixels, samples) the fit read.
        error_before: ``||Y_small - Y_original|| / ||Y_original||`` on the calibration rows,
            before this layer was changed (after earlier layers were, when sequential).
        error_after: the same after.
    """

    name: str
    layer: str
    method: str
    reason: str
    features: int
    rows: int
    error_before: float
    error_after: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class ReconstructResult:
    """The outcome of :func:`reconstruct`: one :class:`LayerReconstruction` per layer whose
    input width was pruned, in the order they were processed."""

    layers: tuple[LayerReconstruction, ...]
    config: ReconstructConfig
    batches: int
    seconds: float

    @property
    def skipped(self) -> tuple[LayerReconstruction, ...]:
        """Layers left unchanged (``method == "skipped"``), each with its reason."""
        return tuple(layer for layer in self.layers if layer.method == "skipped")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "config": self.config.to_dict(),
            "batches": self.batches,
            "seconds": self.seconds,
        }

    def describe(self) -> str:
        """A plain-text table: layer, method, relative error before and after."""
        lines = [
            f"reconstruct ({self.config.method}, {self.batches} batches, {self.seconds:.2f} s)",
            f"{'layer':40s} {'method':8s} {'before':>8s} {'after':>8s}  note",
        ]
        for r in self.layers:
            lines.append(
                f"{r.name:40s} {r.method:8s} {r.error_before:8.4f} {r.error_after:8.4f}  {r.reason}"
            )
        return "\n".join(lines)


class _Stop(Exception):
    """Raised by a hook once every watched layer has run: the rest of the pass is skipped."""


@dataclass
class _Target:
    name: str
    kind: str  # "linear", "conv" (1-D/2-D), "conv3d", "hf_conv1d"
    small: nn.Module
    original: nn.Module
    out_idx: torch.Tensor | None
    features: int
    refit_reason: str
    calls: int = 0


# -- finding the layers ----------------------------------------------------------------------
def _kind(module: nn.Module) -> str | None:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return "conv"
    if isinstance(module, nn.Conv3d):
        return "conv3d"
    if type(module).__name__ == "Conv1D" and weight.dim() == 2:
        return "hf_conv1d"  # transformers' GPT-2 style: y = x @ W + b, W is [in, out]
    return None


def _dims(kind: str) -> tuple[int, int]:
    """(input dim, output dim) of the weight."""
    return (0, 1) if kind == "hf_conv1d" else (1, 0)


def _targets(small: nn.Module, original: nn.Module, plan: Plan, scope: str) -> list[_Target]:
    originals = dict(original.named_modules())
    shared: dict[int, list[str]] = {}
    for name, p in small.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    found: list[_Target] = []
    for name, module in small.named_modules():
        kind = _kind(module)
        dims = plan.tensors.get(f"{name}.weight") if kind else None
        if kind is None or not dims:
            continue
        in_dim, out_dim = _dims(kind)
        size = plan.shapes[f"{name}.weight"]
        in_idx = dims.get(in_dim)
        if in_idx is None or len(in_idx) == size[in_dim]:
            if scope == "inputs":
                continue  # its input width is whole
            in_idx = tuple(range(size[in_dim]))
        other = originals.get(name)
        if other is None or type(other) is not type(module):
            raise InputError(
                f"layer {name!r} ({type(module).__name__}) of the pruned model has no "
                f"counterpart of the same class in original (found "
                f"{type(other).__name__ if other is not None else 'nothing'}); pass the model "
                f"it was pruned from as original"
            )
        weight = module.weight
        if tuple(weight.shape)[in_dim] != len(in_idx):
            raise InputError(
                f"layer {name!r} of the pruned model has {weight.shape[in_dim]} inputs, its plan "
                f"keeps {len(in_idx)}; the model was changed after pruning: prune it again "
                f"(ns.prune / ns.apply) and reconstruct before changing it"
            )
        out_idx = dims.get(out_dim)
        out_t = (
            None
            if out_idx is None or len(out_idx) == size[out_dim]
            else torch.as_tensor(list(out_idx), dtype=torch.long)
        )
        features = int(weight[0].numel()) if kind != "hf_conv1d" else int(weight.shape[0])
        reason = ""
        if kind == "conv3d":
            reason = "3-D convolutions are bias-compensated only"
        elif getattr(module, "groups", 1) != 1:
            reason = f"grouped convolution (groups={module.groups}) is bias-compensated only"
        elif len(shared.get(id(weight), ())) > 1:
            others = [n for n in shared[id(weight)] if n != f"{name}.weight"]
            reason = f"weight is tied to {', '.join(others)}; refitting would change it too"
        found.append(_Target(name, kind, module, other, out_t, features, reason))
    return found


# -- running the models ----------------------------------------------------------------------
def _batches(calib: Any) -> list[ExampleInputs]:
    if isinstance(calib, (torch.Tensor, Mapping)):
        raise ExampleInputsError(
            f"calib must be a list of batches, got one {type(calib).__name__}; wrap a single "
            f"batch in a list: calib=[batch]"
        )
    if isinstance(calib, (str, bytes)) or not isinstance(calib, Iterable):
        raise ExampleInputsError(
            f"calib must be a list of batches (tensors, tuples or dicts of keyword inputs), got "
            f"{calib!r:.60} ({type(calib).__name__})"
        )
    batches = list(calib)
    if not batches:
        raise ExampleInputsError(
            "calib is empty; pass at least one batch shaped like the model's inputs, e.g. "
            "calib=[x1, x2]"
        )
    for i, batch in enumerate(batches):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise ExampleInputsError(
                f"calib[{i}] is {type(batch).__name__} ({batch!r:.60}), not a batch; each batch "
                f"is a tensor, a tuple of tensors or a dict of keyword inputs"
            )
    return batches


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _first_tensor(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _run(
    model: nn.Module,
    which: str,
    batch: ExampleInputs,
    index: int,
    watch: Mapping[str, nn.Module],
    *,
    inputs: bool,
    calls: Mapping[str, int] | None,
    trace: bool = False,
) -> dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]]:
    """Run ``model`` on ``batch`` and return, per watched layer, ``(input, output)`` of each
    call (input only when ``inputs``); stop once every layer ran ``calls[name]`` times.
    Layers appear in the order of their first call; a layer that never ran is absent."""
    captured: dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]] = {}
    entered: list[str] = []

    def hook(name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:  # noqa: ARG001
        x = _first_tensor(args, kwargs) if inputs else None
        if not isinstance(output, torch.Tensor):
            raise InputError(
                f"layer {name!r} of the {which} model returned {type(output).__name__}, not a "
                f"tensor; reconstruct only handles plain Linear / Conv layers: exclude it"
            )
        captured.setdefault(name, []).append((None if x is None else x.detach(), output.detach()))
        if calls is not None and all(len(captured.get(n, ())) >= calls[n] for n in watch):
            raise _Stop

    handles = [
        module.register_forward_hook(functools.partial(hook, name), with_kwargs=True)
        for name, module in watch.items()
    ]
    if trace:
        for name, module in model.named_modules():
            if name:
                handles.append(
                    module.register_forward_pre_hook(
                        lambda _m, _a, n=name: entered.append(n)  # type: ignore[misc]
                    )
                )
    args, kwargs = split_inputs(inputs_to(batch, _device(model)))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except _Stop:
        pass
    except NetsculptError:
        raise
    except Exception as exc:
        where = f" in module {entered[-1]!r}" if entered else ""
        raise ExampleInputsError(
            f"calib[{index}] ({describe_inputs(batch)}) cannot be run through the {which} "
            f"model{where}: {type(exc).__name__}: {exc}; pass calibration batches shaped like "
            f"the example inputs the model was pruned with (nothing was changed)"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return captured


def _mask(batch: ExampleInputs, config: ReconstructConfig) -> torch.Tensor | None:
    if not config.ignore_padding or not isinstance(batch, Mapping):
        return None
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask
    return None


def _rows_in(t: _Target, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as a ``[rows, features]`` matrix matching ``weight.reshape(out, -1)``."""
    if t.kind in ("linear", "hf_conv1d"):
        return x.reshape(-1, x.shape[-1])
    conv: Any = t.small
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    pads = conv._reversed_padding_repeated_twice
    if any(pads):
        x = F.pad(x, pads, mode=mode)
    if isinstance(conv, nn.Conv1d):
        cols = F.unfold(
            x.unsqueeze(2),
            (1, conv.kernel_size[0]),
            dilation=(1, conv.dilation[0]),
            stride=(1, conv.stride[0]),
        )
    else:
        cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _rows_out(t: _Target, y: torch.Tensor) -> torch.Tensor:
    if t.kind in ("linear", "hf_conv1d"):
        return y.reshape(-1, y.shape[-1])
    return y.movedim(1, -1).reshape(-1, y.shape[1])


def _keep_rows(t: _Target, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None or t.kind not in ("linear", "hf_conv1d") or x.dim() != 3:
        return None
    if tuple(x.shape[:2]) != tuple(mask.shape):
        return None
    return mask.to(x.device).reshape(-1) != 0


# -- the normal equations --------------------------------------------------------------------
class _Stats:
    """Sums over calibration rows for one layer (float64)."""

    def __init__(self, t: _Target, refit: bool, device: torch.device) -> None:
        out = _w(t.small).shape[1 if t.kind == "hf_conv1d" else 0]
        d = t.features + int(_bias(t.small) is not None)
        f64 = torch.float64
        self.refit = refit
        self.with_bias = _bias(t.small) is not None
        self.gram = torch.zeros(d, d, dtype=f64, device=device) if refit else None
        self.cross = torch.zeros(d, out, dtype=f64, device=device) if refit else None
        self.sum_r = torch.zeros(out, dtype=f64, device=device)
        self.sq_r = torch.zeros(out, dtype=f64, device=device)
        self.yy = torch.zeros((), dtype=f64, device=device)
        self.n = 0

    def add(self, x: torch.Tensor | None, y_small: torch.Tensor, y_orig: torch.Tensor) -> None:
        y_o = y_orig.double()
        r = y_o - y_small.double()
        self.sum_r += r.sum(0)
        self.sq_r += (r * r).sum(0)
        self.yy += (y_o * y_o).sum()
        self.n += int(y_o.shape[0])
        if self.refit and x is not None and self.gram is not None and self.cross is not None:
            xa = x.double()
            if self.with_bias:
                xa = torch.cat([xa, xa.new_ones(xa.shape[0], 1)], dim=1)
            self.gram += xa.T @ xa
            self.cross += xa.T @ y_o


def _w(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # _kind() admitted only modules with one
    return weight


def _bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def _weight_matrix(t: _Target) -> torch.Tensor:
    """The weight as ``[out, features]`` float64."""
    w = _w(t.small).detach().double()
    return w.T if t.kind == "hf_conv1d" else w.reshape(w.shape[0], -1)


def _rel(err: float, yy: float) -> float:
    return math.sqrt(max(err, 0.0) / yy) if yy > 0 else (0.0 if err <= 0 else math.inf)


def _solve(t: _Target, stats: _Stats, damping: float) -> tuple[torch.Tensor, str]:
    """The refitted ``[features (+1), out]`` solution, or an empty tensor and a reason."""
    assert stats.gram is not None and stats.cross is not None  # refit stats
    gram, cross = stats.gram, stats.cross
    d = t.features
    if stats.n < gram.shape[0]:
        return gram.new_empty(0), (
            f"{stats.n} calibration rows for {gram.shape[0]} unknowns per output: too few to "
            f"refit (pass more calibration batches); bias-compensated"
        )
    scale = float(gram.diagonal()[:d].mean())
    if not scale > 0:
        return gram.new_empty(0), "its inputs are all zero on the calibration batches"
    lam = damping * scale
    a = gram.clone()
    a.diagonal()[:d] += lam
    rhs = cross.clone()
    rhs[:d] += lam * _weight_matrix(t).T
    try:
        sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(a))
    except RuntimeError:  # singular without damping: the minimum-norm solution
        sol = torch.linalg.pinv(a) @ rhs
    if not bool(torch.isfinite(sol).all()):
        return gram.new_empty(0), "the least-squares solution is not finite; raise damping"
    return sol, ""


def _write(t: _Target, sol: torch.Tensor) -> None:
    weight = _w(t.small)
    w = sol[: t.features].T  # [out, features]
    with torch.no_grad():
        if t.kind == "hf_conv1d":
            weight.copy_(w.T.to(weight.dtype))
        else:
            weight.copy_(w.reshape(weight.shape).to(weight.dtype))
        bias = _bias(t.small)
        if bias is not None:
            bias.copy_(sol[t.features].to(bias.dtype))


def _finish(t: _Target, stats: _Stats, config: ReconstructConfig) -> LayerReconstruction:
    """Solve for one layer, change it, and report."""
    yy = float(stats.yy)
    before = float(stats.sq_r.sum())
    method: str = config.method
    reason = t.refit_reason if method == "refit" else ""
    after = before
    if before <= 1e-12 * yy:
        method, reason = "skipped", "its output already matches the original's"
    elif method == "refit" and not reason:
        sol, reason = _solve(t, stats, config.damping)
        if not reason:
            assert stats.gram is not None and stats.cross is not None
            fit = (
                yy - 2 * float((sol * stats.cross).sum()) + float((sol * (stats.gram @ sol)).sum())
            )
            if fit <= before * (1 + 1e-6) + 1e-12 * yy:
                _write(t, sol)
                after = fit
            else:
                reason = "the refit did not lower the calibration error; kept the weights"
                method = "skipped"
    if reason and method == "refit":
        method = "bias"
    if method == "bias":
        bias = _bias(t.small)
        if bias is None:
            method = "skipped"
            reason = (reason + "; " if reason else "") + "the layer has no bias to compensate"
        elif stats.n:
            with torch.no_grad():
                bias += (stats.sum_r / stats.n).to(bias.device, bias.dtype)
            after = float((stats.sq_r - stats.sum_r**2 / stats.n).sum())
    return LayerReconstruction(
        name=t.name,
        layer=type(t.small).__name__,
        method=method,
        reason=reason,
        features=t.features,
        rows=stats.n,
        error_before=_rel(before, yy),
        error_after=_rel(after, yy),
    )


# -- the verb --------------------------------------------------------------------------------
def reconstruct(
    small: nn.Module,
    original: nn.Module,
    calib: Sequence[ExampleInputs] | Iterable[ExampleInputs],
    config: ReconstructConfig | None = None,
) -> ReconstructResult:
    """Refit, by least squares on calibration batches, the layers of ``small`` whose input
    width was pruned, so that they reproduce ``original``'s layers. Changes ``small`` in
    place (its weights and biases; nothing else) and returns what was done per layer
    (also kept for :func:`netsculpt.reconstruction_of`).

    Args:
        small: a model pruned by netsculpt (``ns.prune`` / ``ns.apply``) from ``original``;
            :func:`netsculpt.plan_of` gives its plan.
        original: the unpruned model ``small`` was pruned from; it is not changed.
        calib: calibration batches (a list, or an iterable read once), each a tensor, a
            tuple or a dict of keyword inputs, as the models take them. A few hundred
            samples (texts, images) are usually enough; keep held-out data for scoring.
        config: a :class:`netsculpt.ReconstructConfig` (default: sequential least-squares
            refit with damping 1e-2).

    Both models run in eval mode under ``torch.no_grad`` (their modes are restored). The
    first batch is run through both models before anything is changed, and should a later
    batch fail, every layer already changed is put back: a failure leaves ``small`` as it
    was.

    Raises:
        InputError: ``small`` was not pruned by netsculpt, ``original`` is not the model it
            was pruned from, or ``config`` is not a ReconstructConfig.
        ExampleInputsError: calibration batches missing, or of a shape the models cannot
            run (the message names the batch, the model and the module that failed).
    """
    started = time.perf_counter()
    check_model(small, what="small")
    check_model(original, what="original")
    if config is None:
        config = ReconstructConfig()
    elif not isinstance(config, ReconstructConfig):
        raise InputError(
            f"config must be a ns.ReconstructConfig or None, got {type(config).__name__} "
            f"({config!r:.60}); e.g. ns.ReconstructConfig(method='bias')"
        )
    if small is original:
        raise InputError(
            "small and original are the same object; pass the pruned copy as small and the "
            "model it was pruned from as original (prune with inplace=False to keep both)"
        )
    plan = plan_of(small)
    if plan is None:
        raise InputError(
            f"small ({type(small).__name__}) was not pruned by netsculpt: it carries no plan; "
            f"prune it with ns.prune(original, inputs) or ns.apply(original, plan) and pass "
            f"that copy"
        )
    try:
        check_plan(original, plan)
    except PlanError as exc:
        raise InputError(
            f"original is not the model small was pruned from ({exc}); pass the unpruned "
            f"model the plan was made for"
        ) from None
    batches = _batches(calib)
    targets = _targets(small, original, plan, config.scope)
    for t in targets:
        needed = t.features + int(_bias(t.small) is not None)
        if not t.refit_reason and needed > config.max_features:
            t.refit_reason = (
                f"{needed} input features exceed max_features={config.max_features}; "
                f"bias-compensated"
            )
    modes = (small.training, original.training)
    small.eval()
    original.eval()
    saved = {
        t.name: (_w(t.small).detach().clone(), _clone(_bias(t.small)), _bias(t.small))
        for t in targets
    }
    try:
        order = _validate(small, original, batches[0], targets)
        if config.sequential:
            cache = _original_outputs(original, batches, order, _CACHE_BYTES)
            layers = [_fit_one(small, original, batches, t, config, cache) for t in order]
        else:
            layers = _fit_all(small, original, batches, order, config)
        layers += [_not_run(t) for t in targets if not t.calls]
    except BaseException:
        with torch.no_grad():
            for t in targets:
                weight, bias_copy, bias = saved[t.name]
                _w(t.small).copy_(weight)
                if bias is not None and bias_copy is not None:
                    bias.copy_(bias_copy)
        raise
    finally:
        small.train(modes[0])
        original.train(modes[1])
    result = ReconstructResult(
        layers=tuple(layers),
        config=config,
        batches=len(batches),
        seconds=time.perf_counter() - started,
    )
    setattr(small, _RESULT_ATTR, result)
    return result


def reconstruction_of(model: nn.Module) -> ReconstructResult | None:
    """The result of the last :func:`reconstruct` of ``model`` (also when
    ``ns.prune(..., config=PruneConfig(reconstruct=True))`` ran it); None if there was none."""
    result = getattr(model, _RESULT_ATTR, None)
    return result if isinstance(result, ReconstructResult) else None


def _not_run(t: _Target) -> LayerReconstruction:
    return LayerReconstruction(
        name=t.name,
        layer=type(t.small).__name__,
        method="skipped",
        reason="the layer does not run on the calibration batches",
        features=t.features,
        rows=0,
        error_before=math.nan,
        error_after=math.nan,
    )


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _validate(
    small: nn.Module, original: nn.Module, batch: ExampleInputs, targets: list[_Target]
) -> list[_Target]:
    """Run the first batch through both models; check every layer's shapes and call count.
    Returns the targets in the order ``small`` runs them (layers that never run dropped)."""
    if not targets:
        return []
    out_o = _run(
        original, "original", batch, 0, {t.name: t.original for t in targets},
        inputs=False, calls=None, trace=True,
    )  # fmt: skip
    out_s = _run(
        small, "pruned", batch, 0, {t.name: t.small for t in targets},
        inputs=True, calls=None, trace=True,
    )  # fmt: skip
    for t in targets:
        got_o, got_s = out_o.get(t.name, []), out_s.get(t.name, [])
        if len(got_o) != len(got_s):
            raise InputError(
                f"layer {t.name!r} runs {len(got_s)} time(s) in the pruned model and "
                f"{len(got_o)} in original on calib[0]; pass the model small was pruned from"
            )
        t.calls = len(got_s)
        for (_, y_o), (x_s, y_s) in zip(got_o, got_s, strict=True):
            assert x_s is not None
            rows_o, rows_s = _rows_out(t, y_o).shape[0], _rows_out(t, y_s).shape[0]
            width = _rows_out(t, y_o).shape[1]
            expected = (
                int(t.out_idx.max()) + 1 if t.out_idx is not None else _rows_out(t, y_s).shape[1]
            )
            if rows_o != rows_s or width < expected or _rows_in(t, x_s).shape[0] != rows_s:
                raise ExampleInputsError(
                    f"layer {t.name!r} gives outputs of shape {tuple(y_s.shape)} in the pruned "
                    f"model and {tuple(y_o.shape)} in original on calib[0]; the two models do "
                    f"not run alike: pass the model small was pruned from, and batches shaped "
                    f"like its example inputs"
                )
    first = {name: k for k, name in enumerate(out_s)}  # the order of first calls
    return sorted((t for t in targets if t.calls), key=lambda t: first[t.name])


def _pairs(
    small: nn.Module,
    original: nn.Module,
    batch: ExampleInputs,
    index: int,
    targets: Sequence[_Target],
    early: bool,
) -> dict[str, list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]]:
    calls = {t.name: t.calls for t in targets} if early else None
    got_o = _run(
        original, "original", batch, index, {t.name: t.original for t in targets},
        inputs=False, calls=calls,
    )  # fmt: skip
    got_s = _run(
        small, "pruned", batch, index, {t.name: t.small for t in targets},
        inputs=True, calls=calls,
    )  # fmt: skip
    out: dict[str, list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]] = {}
    for t in targets:
        out[t.name] = [
            (x_s, y_s, y_o)
            for (_, y_o), (x_s, y_s) in zip(
                got_o.get(t.name, []), got_s.get(t.name, []), strict=False
            )
        ]
    return out


def _accumulate(
    stats: _Stats,
    t: _Target,
    items: list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]],
    mask: torch.Tensor | None,
) -> None:
    for x_s, y_s, y_o in items:
        assert x_s is not None
        device = stats.sum_r.device
        keep = _keep_rows(t, x_s, mask)
        x = _rows_in(t, x_s) if stats.refit else None
        ys = _rows_out(t, y_s)
        yo = _rows_out(t, y_o.to(device))
        if t.out_idx is not None:
            yo = yo.index_select(1, t.out_idx.to(device))
        if keep is not None:
            ys, yo = ys[keep], yo[keep]
            x = x[keep] if x is not None else None
        stats.add(x, ys, yo)


def _original_outputs(
    original: nn.Module, batches: list[ExampleInputs], targets: list[_Target], limit: int
) -> dict[str, list[list[torch.Tensor]]] | None:
    """Every target's outputs in ``original`` on every batch, from one pass per batch: the
    original model need not run again for each layer. None when they exceed ``limit``
    bytes (each layer then runs ``original`` up to itself again)."""
    cache: dict[str, list[list[torch.Tensor]]] = {t.name: [] for t in targets}
    total = 0
    watch = {t.name: t.original for t in targets}
    for i, batch in enumerate(batches):
        got = _run(original, "original", batch, i, watch, inputs=False, calls=None)
        for t in targets:
            outputs = [y for _, y in got.get(t.name, [])]
            total += sum(y.numel() * y.element_size() for y in outputs)
            cache[t.name].append(outputs)
        if total > limit:
            return None
    return cache


def _fit_one(
    small: nn.Module,
    original: nn.Module,
    batches: list[ExampleInputs],
    t: _Target,
    config: ReconstructConfig,
    cache: Mapping[str, list[list[torch.Tensor]]] | None,
) -> LayerReconstruction:
    refit = config.method == "refit" and not t.refit_reason
    stats = _Stats(t, refit, _w(t.small).device)
    for i, batch in enumerate(batches):
        if cache is None:
            items = _pairs(small, original, batch, i, [t], early=True)[t.name]
        else:
            got = _run(
                small, "pruned", batch, i, {t.name: t.small}, inputs=True, calls={t.name: t.calls}
            ).get(t.name, [])
            items = [(x, y, y_o) for (x, y), y_o in zip(got, cache[t.name][i], strict=False)]
        _accumulate(stats, t, items, _mask(batch, config))
    return _finish(t, stats, config)


def _fit_all(
    small: nn.Module,
    original: nn.Module,
    batches: list[ExampleInputs],
    targets: list[_Target],
    config: ReconstructConfig,
) -> list[LayerReconstruction]:
    stats = {
        t.name: _Stats(t, config.method == "refit" and not t.refit_reason, _w(t.small).device)
        for t in targets
    }
    for i, batch in enumerate(batches):
        got = _pairs(small, original, batch, i, targets, early=False)
        for t in targets:
            _accumulate(stats[t.name], t, got[t.name], _mask(batch, config))
    return [_finish(t, stats[t.name], config) for t in targets]
