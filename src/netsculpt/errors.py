"""The netsculpt exception tree.

Every error netsculpt raises on purpose derives from :class:`NetsculptError`, and every
message names the offending value and says what to do about it::

    NetsculptError
    ├── InputError (also ValueError)           bad arguments to a public function
    │   ├── InvalidRatioError                  ratio / sparsity outside its range
    │   ├── UnknownNameError                   unknown importance, sampler, objective, task, backend
    │   └── ExampleInputsError                 example inputs that the model cannot be called with
    ├── CaptureError                           the model's graph could not be captured
    ├── UnsupportedOperationError              an op netsculpt cannot propagate channels through
    ├── NothingToPruneError                    every group is protected or excluded
    ├── PlanError                              a plan that does not fit the model it is applied to
    ├── SaveLoadError                          a save folder that is missing, incomplete or foreign
    │   └── ChecksumError                      a save folder whose files were changed after saving
    ├── FactoryError                           a "package.module:factory" string that fails
    ├── UntrustedCodeError                     data (a folder, a study) names code, not opted in
    ├── MeasureError                           a latency / size measurement that could not be taken
    ├── ExportError                            ONNX export failed or does not match PyTorch
    ├── SearchError                            search set-up problems
    │   ├── StorageError                       a storage URL that cannot be reached
    │   ├── StudyMismatchError                 a study that exists with other objectives
    │   └── ConstraintError                    a constraint that no trial satisfies
    ├── TrainingError                          fine-tuning / distillation set-up problems
    │   └── DivergenceError                    a loss that became NaN or infinite
    └── SparsityError                          sparsity configuration problems (N > M, bad schedule)
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "ChecksumError",
    "ConstraintError",
    "DivergenceError",
    "ExampleInputsError",
    "ExportError",
    "FactoryError",
    "InputError",
    "InvalidRatioError",
    "MeasureError",
    "NetsculptError",
    "NothingToPruneError",
    "PlanError",
    "SaveLoadError",
    "SearchError",
    "SparsityError",
    "StorageError",
    "StudyMismatchError",
    "TrainingError",
    "UnknownNameError",
    "UnsupportedOperationError",
    "UntrustedCodeError",
]


class NetsculptError(Exception):
    """Base class of every error netsculpt raises on purpose."""


class InputError(NetsculptError, ValueError):
    """An argument to a public function is invalid."""


class InvalidRatioError(InputError):
    """A ratio or sparsity is outside its allowed range."""


class UnknownNameError(InputError):
    """A name (importance, sampler, objective, task, backend, ...) is not registered."""


class ExampleInputsError(InputError):
    """The example inputs cannot be passed to the model."""


class CaptureError(NetsculptError):
    """The model's computation graph could not be captured."""


class UnsupportedOperationError(NetsculptError):
    """The graph contains an operation that netsculpt cannot propagate channels through."""


class NothingToPruneError(NetsculptError):
    """No prunable group is left once protected and excluded groups are removed."""


class PlanError(NetsculptError):
    """A plan does not fit the model it is applied to."""


class SaveLoadError(NetsculptError):
    """A save folder is missing, incomplete or was not written by netsculpt."""


class ChecksumError(SaveLoadError):
    """A file in a save folder changed after it was saved."""


class FactoryError(NetsculptError):
    """A ``package.module:factory`` string could not be imported or called."""


class UntrustedCodeError(NetsculptError):
    """A save folder, plan or study names code to import or call, and the caller did not opt in.

    Files a user did not write are data; running what they name needs ``trust_code=True``
    (``--trust-code`` on the command line).
    """


class MeasureError(NetsculptError):
    """A measurement could not be taken."""


class ExportError(NetsculptError):
    """Export failed, or the exported model does not match the PyTorch model."""


class SearchError(NetsculptError):
    """The search could not be set up or run."""


class StorageError(SearchError):
    """A study storage cannot be reached or opened."""


class StudyMismatchError(SearchError):
    """A study with this name exists with different objectives or settings."""


class ConstraintError(SearchError):
    """No trial satisfies the requested constraint."""


class TrainingError(NetsculptError):
    """Fine-tuning or distillation could not be set up."""


class DivergenceError(TrainingError):
    """The training loss became NaN or infinite."""


class SparsityError(NetsculptError):
    """A sparsity configuration is invalid."""
