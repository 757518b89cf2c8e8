"""Where a study lives: SQLite by default, a journal file for local workers, any RDB URL.

``storage`` strings are read as follows:

* ``None``: ``sqlite:///netsculpt.db`` in the working folder (one worker), or the journal
  file ``netsculpt.journal`` there when ``workers > 1`` (SQLite is not made for several
  writers);
* a URL with ``://`` (``sqlite:///x.db``, ``postgresql://user:pw@host/db``, ...): an Optuna
  ``RDBStorage`` with heartbeats, so trials of a worker that died are retried by the others;
* a path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: that SQLite file;
* any other path: an Optuna journal file (``JournalFileBackend``), safe for several worker
  processes on one machine.

An ``optuna.storages.BaseStorage`` instance is used unchanged.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from netsculpt.errors import InputError, SearchError, StorageError

__all__ = [
    "DEFAULT_JOURNAL",
    "DEFAULT_SQLITE",
    "StorageSpec",
    "load_study",
    "open_storage",
    "resolve_storage",
]

DEFAULT_SQLITE = "sqlite:///netsculpt.db"
DEFAULT_JOURNAL = "netsculpt.journal"
#: Seconds between heartbeats of a running trial (RDB storages).
HEARTBEAT_INTERVAL = 5
#: Seconds without a heartbeat after which another worker fails and retries a trial.
GRACE_PERIOD = 30
#: How many times a trial whose worker died is retried.
MAX_RETRY = 3
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: ``kind`` is ``"rdb"``, ``"journal"`` or ``"object"``.

    ``url`` is what a worker process needs to open the same storage again (the RDB URL or
    the absolute journal path); ``display`` is the same with any password hidden.
    """

    kind: str
    url: str
    display: str


def resolve_storage(storage: str | os.PathLike[str] | None, *, workers: int = 1) -> StorageSpec:
    """Read a storage argument (see the module docstring) without opening it."""
    if storage is None:
        if workers > 1:
            path = str(Path(DEFAULT_JOURNAL).absolute())
            return StorageSpec("journal", path, path)
        storage = DEFAULT_SQLITE
    text = os.fspath(storage)
    if "://" in text:
        if text.startswith("sqlite:///") and workers > 1:
            raise StorageError(
                f"storage {text!r} is an SQLite file, which cannot take {workers} worker "
                f"processes writing at once; use a journal file (storage='netsculpt.journal') "
                f"for workers on one machine, or a postgresql:// URL for workers on many"
            )
        return StorageSpec("rdb", text, _hide_password(text))
    if text.lower().endswith(_SQLITE_SUFFIXES):
        return resolve_storage("sqlite:///" + str(Path(text).absolute()), workers=workers)
    path = str(Path(text).absolute())
    return StorageSpec("journal", path, path)


def _driver_url(url: str) -> str:
    """Pick an installed PostgreSQL driver for a bare ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; where only psycopg2 is installed,
    the URL is pointed at it (``postgresql+psycopg2://``). ``postgres://`` is accepted as
    an alias of ``postgresql://``.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2" + sep + rest
    return "postgresql" + sep + rest


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- not a URL SQLAlchemy understands: show it as given
        return url


def open_storage(spec: StorageSpec, *, heartbeat: bool = True) -> BaseStorage:
    """Open the storage ``spec`` describes; a storage that cannot be reached raises StorageError.

    RDB storages get heartbeats (``HEARTBEAT_INTERVAL`` / ``GRACE_PERIOD``) and Optuna's
    ``RetryHeartbeatStaleTrialCallback``, so a trial whose worker died on another machine is
    failed and queued again by the workers still running.
    """
    if spec.kind == "journal":
        return _open_journal(spec)
    if spec.kind != "rdb":
        raise StorageError(f"cannot reopen storage {spec.display!r} of kind {spec.kind!r}")
    url = _driver_url(spec.url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
        _check_sqlite_folder(url, spec.display)
    elif url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
        engine_kwargs["pool_pre_ping"] = True
    elif url.startswith("mysql"):
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        warnings.filterwarnings(
            "ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna"
        )
        warnings.filterwarnings(
            "ignore", category=optuna.exceptions.ExperimentalWarning, module=__name__
        )
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "grace_period": GRACE_PERIOD,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY
            ),
        }
    sqlite_file = url.startswith("sqlite:///") and ":memory:" not in url
    try:
        with _sqlite_pragmas_while_opening(sqlite_file):
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        if sqlite_file:
            import sqlalchemy

            sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        return storage
    except Exception as exc:  # SQLAlchemy / driver errors: say which URL and what to do
        raise StorageError(
            f"cannot open the study storage {spec.display!r}: {type(exc).__name__}: "
            f"{_first_line(exc)}; check that the database server is running and reachable "
            f"at that address with these credentials (and that its driver, e.g. psycopg2 for "
            f"postgresql://, is installed), or leave storage=None for a local SQLite file "
            f"'netsculpt.db'"
        ) from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """Write-ahead logging with ``synchronous=NORMAL`` on an SQLite connection.

    Commits get ~10x faster; a commit is still safe when the process is killed
    (``kill -9``), only an operating-system crash may lose the last ones. Readers no
    longer block the writer.
    """
    if type(dbapi_conn).__module__.split(".")[0] not in ("sqlite3", "pysqlite2"):
        return
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextlib.contextmanager
def _sqlite_pragmas_while_opening(enabled: bool) -> Iterator[None]:
    """Apply :func:`_sqlite_pragmas` to the connections Optuna opens while creating tables."""
    if not enabled:
        yield
        return
    import sqlalchemy

    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", _sqlite_pragmas)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "connect", _sqlite_pragmas)


def _open_journal(spec: StorageSpec) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(spec.url)
    if not path.parent.is_dir():
        raise StorageError(
            f"cannot open the journal file {spec.display!r}: folder {str(path.parent)!r} does "
            f"not exist; create it first or pass a journal path in an existing folder"
        )
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:
        raise StorageError(
            f"cannot open the journal file {spec.display!r}: {type(exc).__name__}: "
            f"{_first_line(exc)}; check that the file is writable and was written by Optuna"
        ) from exc


def _check_sqlite_folder(url: str, display: str) -> None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        return
    path = Path(url[len(prefix) :].split("?")[0])
    if str(path) and not path.parent.is_dir():
        raise StorageError(
            f"cannot open the study storage {display!r}: folder {str(path.parent)!r} does not "
            f"exist; create it first or point the URL at an existing folder"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def load_study(
    storage: str | os.PathLike[str] | BaseStorage | None, study_name: str
) -> optuna.Study:
    """Open an existing study; a missing one raises SearchError listing those stored."""
    if storage is not None and not isinstance(storage, (str, os.PathLike, BaseStorage)):
        raise InputError(
            f"storage must be None, a URL or path string, or an optuna storage, got "
            f"{type(storage).__name__}; e.g. storage='sqlite:///netsculpt.db'"
        )
    if not isinstance(study_name, str) or not study_name:
        raise InputError(f"study_name must be a non-empty string, got {study_name!r}")
    opened = (
        storage
        if isinstance(storage, BaseStorage)
        else open_storage(resolve_storage(storage), heartbeat=False)
    )
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        pass
    except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
        raise SearchError(
            f"study {study_name!r} in storage {_display(storage)!r} cannot be read "
            f"({type(exc).__name__}); the storage was damaged or not written by Optuna"
        ) from None
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
    except Exception:  # noqa: BLE001 -- listing is only a hint
        names = []
    raise SearchError(
        f"storage {_display(storage)!r} has no study {study_name!r}; stored studies: "
        f"{', '.join(sorted(map(str, names))[:20]) or 'none'}"
    )


def _display(storage: Any) -> str:
    if isinstance(storage, BaseStorage):
        return type(storage).__name__
    return resolve_storage(storage).display
