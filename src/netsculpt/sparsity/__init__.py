"""Sparsity: masks as real state, and the unstructured and N:M methods of the literature.

One verb, :func:`netsculpt.sparsify`, applies a method given as a config value::

    import netsculpt as ns
    from netsculpt.sparsity import GradualConfig, NMConfig

    gmp = ns.sparsify(model, GradualConfig(sparsity=0.9), task=task, budget=2000)
    two_four = ns.sparsify(model, NMConfig(n=2, m=4, method="sr-ste"), task=task, budget=2000)
    save_sparse(gmp.model, "sparse.safetensors")

The methods are also training-loop callbacks (:class:`GradualPruning`, :class:`RigLUpdates`,
:class:`SRSTE`, :class:`MaskCallback`) that compose with :func:`netsculpt.finetune`.

Unstructured and N:M zeros make a model smaller once compressed, not faster on a CPU: dense
kernels multiply the zeros like any other number. Speed needs structured pruning
(:func:`netsculpt.prune`) or a runtime with sparse kernels, such as 2:4 sparse tensor cores
on recent NVIDIA GPUs.
"""

from netsculpt.sparsity.api import SparseResult, sparsify
from netsculpt.sparsity.callbacks import (
    SRSTE,
    GradualPruning,
    RewindCapture,
    RigLUpdates,
)
from netsculpt.sparsity.config import (
    GradualConfig,
    GraNetConfig,
    LotteryTicketConfig,
    MagnitudeConfig,
    NMConfig,
    RandomConfig,
    RigLConfig,
    SparsityConfig,
    config_from_dict,
)
from netsculpt.sparsity.criteria import (
    erk_densities,
    magnitude_masks,
    nm_mask,
    nm_masks,
    random_masks,
    regrow,
)
from netsculpt.sparsity.io import load_sparse, read_sparsity, save_sparse
from netsculpt.sparsity.lottery import reinitialize, rewind
from netsculpt.sparsity.masks import (
    MaskCallback,
    MaskParametrization,
    Masks,
    fold,
    select_parameters,
    weight_sparsity,
)
from netsculpt.sparsity.schedules import cosine_fraction, cubic_sparsity, update_steps

__all__ = [
    "SRSTE",
    "GraNetConfig",
    "GradualConfig",
    "GradualPruning",
    "LotteryTicketConfig",
    "MagnitudeConfig",
    "MaskCallback",
    "MaskParametrization",
    "Masks",
    "NMConfig",
    "RandomConfig",
    "RewindCapture",
    "RigLConfig",
    "RigLUpdates",
    "SparseResult",
    "SparsityConfig",
    "config_from_dict",
    "cosine_fraction",
    "cubic_sparsity",
    "erk_densities",
    "fold",
    "load_sparse",
    "magnitude_masks",
    "nm_mask",
    "nm_masks",
    "random_masks",
    "read_sparsity",
    "regrow",
    "reinitialize",
    "rewind",
    "save_sparse",
    "select_parameters",
    "sparsify",
    "update_steps",
    "weight_sparsity",
]
