"""Task registry: built-in tasks by name, user tasks by decorator or import string.

>>> import netsculpt as ns
>>> task = ns.get_task("digits")                  # doctest: +SKIP
>>> @register_task("my-task")
... class MyTask(ns.Task):
...     def evaluate(self, model):
...         return 1.0
>>> get_task("my-task").name
'my-task'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from netsculpt._factories import is_dotted_spec, resolve
from netsculpt.errors import FactoryError, InputError, UnknownNameError, UntrustedCodeError
from netsculpt.tasks.base import Task

__all__ = ["available_tasks", "get_task", "register_task", "task_from_data"]

TaskFactory = Callable[..., Task]
F = TypeVar("F", bound=TaskFactory)

# name -> factory, or "module:attribute" for built-ins imported on first use (keeps
# scikit-learn, transformers and mnist1d out of ``import netsculpt``).
_TASKS: dict[str, TaskFactory | str] = {
    "digits": "netsculpt.tasks.digits:DigitsTask",
    "minilm": "netsculpt.tasks.minilm:MiniLMTask",
    "mnist1d": "netsculpt.tasks.mnist1d:MNIST1DTask",
    "tinylm": "netsculpt.tasks.tinylm:TinyLMTask",
}


@overload
def register_task(name: str) -> Callable[[F], F]: ...
@overload
def register_task(name: F) -> F: ...
def register_task(name: str | F) -> Callable[[F], F] | F:
    """Register a task class or factory under ``name`` so :func:`get_task` can build it.

    Use as ``@register_task("name")``, or bare ``@register_task`` on a Task subclass to
    register it under its ``name`` attribute. A later registration replaces an earlier one.
    """

    def decorate(factory: F, key: str) -> F:
        if isinstance(factory, type) and issubclass(factory, Task) and factory.name == "task":
            factory.name = key
        _TASKS[key] = factory
        return factory

    if isinstance(name, str):
        return lambda factory: decorate(factory, name)
    return decorate(name, str(getattr(name, "name", getattr(name, "__name__", name))))


def available_tasks() -> list[str]:
    """Names :func:`get_task` accepts (besides ``"package.module:factory"`` strings)."""
    return sorted(_TASKS)


def get_task(name: str, **options: Any) -> Task:
    """Build the task registered as ``name``, passing ``options`` to its constructor.

    ``name`` is a registered name (``"digits"``, ``"minilm"``, ``"mnist1d"``, ``"tinylm"``, or
    one added with :func:`register_task`) or an import string ``"package.module:factory"``,
    which is imported: pass only names you typed (a name read from a file or a study goes
    through :func:`task_from_data`).
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(
            f"task name must be a non-empty string, got {name!r} ({type(name).__name__}); "
            f"choose one of {', '.join(available_tasks())} or pass an ns.Task instance"
        )
    entry: TaskFactory | str | None = _TASKS.get(name)
    if entry is None and ":" in name:
        entry = name
    if entry is None:
        raise UnknownNameError(
            f"unknown task {name!r}; choose one of {', '.join(available_tasks())}, pass "
            f"'package.module:factory', or register your own with @netsculpt.tasks.register_task"
        )
    factory = _resolve(entry) if isinstance(entry, str) else entry
    task = factory(**options)
    if not isinstance(task, Task):
        raise FactoryError(
            f"task factory {name!r} returned {type(task).__name__}, not a netsculpt.Task; "
            f"make it return an instance of a Task subclass"
        )
    return task


def task_from_data(name: Any, *, source: str, trust_code: bool = False) -> Task:
    """Build the task named in data (a study, a save folder) without running its code.

    A registered name builds the registered task. A ``"package.module:factory"`` string
    would import and call that module, so it needs ``trust_code=True``; ``source`` names
    where the string was read (``"study 'demo'"``) for the error message.

    Raises:
        UntrustedCodeError: ``name`` is an import string and ``trust_code`` is False.
        UnknownNameError: ``name`` is not a registered task.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 500:
        raise UnknownNameError(
            f"{source} names the task {_short(name)}, which is not a task name; pass the task "
            f"yourself (task=your_task)"
        )
    if name in _TASKS:
        return get_task(name)
    if ":" in name:
        if not is_dotted_spec(name):
            raise UntrustedCodeError(
                f"{source} names the task {_short(name)}, which is not 'package.module:factory'"
                f"; netsculpt runs no code named by data: pass the task yourself (task=your_task)"
            )
        if not trust_code:
            raise UntrustedCodeError(
                f"{source} names the task factory {_short(name)}, which netsculpt would import "
                f"and call; data runs no code unless you opt in: pass trust_code=True "
                f"(--trust-code) if you trust whoever wrote it, or pass the task yourself "
                f"(task=your_task)"
            )
        return get_task(name)
    raise UnknownNameError(
        f"{source} names the task {_short(name)}, which is not registered here; choose one of "
        f"{', '.join(available_tasks())}, register it with @netsculpt.tasks.register_task, or "
        f"pass the task yourself (task=your_task)"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolve(spec: str) -> TaskFactory:
    factory: TaskFactory = resolve(
        spec, what="task factory", expects="a Task class or a function returning a Task"
    )
    return factory
