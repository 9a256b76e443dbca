"""Where a render's logs go: every record to one file per run, only what needs a person to the terminal.

A clip that fails for a reason narro expects (any NarroError: a quality-gate refusal, a store
that went away) shows on the terminal only as its line in the summary; Prefect's records of the
failure, with their tracebacks, go to the file. An unexpected exception (a bug) also prints its
traceback to the terminal, once, however many loggers report it and however many clips it hits.
With `verbose`, Prefect's own console output stays on as well.

Prefect sets up logging when `prefect.main` is imported (prefect.logging.configuration: a
console handler on the root logger, and on a few loggers that do not propagate). For the length
of a run those console handlers are swapped for ours, in this process only; Prefect's and the
user's configuration files are left alone. Records of tasks that run in other processes (Dask
workers in cluster mode) stay in those processes' own logs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from narro.errors import NarroError, SettingsError

# Whose INFO records tell the story of a run: task runs, their states and retries, narro's takes.
STORY_LOGGERS = ("prefect", "narro")
FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def log_path(folder: Path, course: str, run_id: str) -> Path:
    return folder / f"{course}-{run_id}.log"


def check_folder(folder: Path) -> None:
    """Make the log folder now, before anything is rendered; SettingsError if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(folder, error) from None
    if not os.access(folder, os.W_OK):
        raise _unwritable(folder, PermissionError("not writable"))


def _unwritable(where: Path, error: OSError) -> SettingsError:
    return SettingsError(f"cannot write run logs in {where}: {error.strerror or error}; "
                         "set NARRO_LOG_DIR to a writable folder")


class Unexpected(logging.Handler):
    """Prints the traceback of an exception narro did not expect, once per place it was raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._seen: set[tuple[str, str, int]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or isinstance(error, NarroError):
            return
        origin = _origin(error)
        if origin in self._seen:  # the same failure, reported again by an outer task or the flow
            return
        self._seen.add(origin)
        try:
            sys.stderr.write(self.format(record) + "\n")  # looked up now: a progress bar may have replaced it
        except Exception:
            self.handleError(record)


def _origin(error: BaseException) -> tuple[str, str, int]:
    """Where an exception was raised: its type and innermost frame."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(error).__qualname__, str(error), 0
    return type(error).__qualname__, tb.tb_frame.f_code.co_filename, tb.tb_lineno


@contextmanager
def run_log(path: Path, *, verbose: bool = False) -> Iterator[Path]:
    """Send the run's logs to `path` (created, with its folder) until the block ends.

    Raises SettingsError when the file cannot be written, before anything runs.
    """
    import prefect.main  # noqa: F401 (importing it sets up Prefect's logging, from scratch: ours must come after)
    from prefect.logging.formatters import PrefectFormatter

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
    except OSError as error:
        raise _unwritable(path, error) from None
    # Prefect's records of a flow or task run name the run instead of the logger.
    to_file.setFormatter(PrefectFormatter(FORMAT, DATE_FORMAT,
                                          flow_run_fmt=FORMAT.replace("%(name)s", "Flow run %(flow_run_name)r"),
                                          task_run_fmt=FORMAT.replace("%(name)s", "Task run %(task_run_name)r")))
    to_terminal = Unexpected()
    to_terminal.setFormatter(PrefectFormatter("%(message)s", task_run_fmt="Task run %(task_run_name)r: %(message)s",
                                              flow_run_fmt="Flow run %(flow_run_name)r: %(message)s"))
    changes = []  # (logger, Prefect's console handlers taken off, our handlers put on)
    for logger in _with_own_handlers():
        console = [] if verbose else [h for h in logger.handlers if _is_prefect_console(h)]
        terminal = [to_terminal] if not verbose and (console or logger is logging.getLogger()) else []
        changes.append((logger, console, [to_file, *terminal]))
    levels = {name: logging.getLogger(name).level for name in STORY_LOGGERS}
    for logger, console, ours in changes:
        for handler in console:
            logger.removeHandler(handler)
        for handler in ours:
            logger.addHandler(handler)
    for name in STORY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings.warn goes to the file too, not between the progress lines
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for logger, console, ours in changes:
            for handler in ours:
                logger.removeHandler(handler)
            for handler in console:
                logger.addHandler(handler)
        to_file.close()


def _with_own_handlers() -> list[logging.Logger]:
    """The root logger and every logger that handles records itself instead of passing them up."""
    named = [logger for logger in logging.Logger.manager.loggerDict.values()
             if isinstance(logger, logging.Logger) and not logger.propagate and logger.handlers]
    return [logging.getLogger(), *named]


def _is_prefect_console(handler: logging.Handler) -> bool:
    """Prefect's handlers that print to the terminal (not its API handler, not pytest's or the user's)."""
    return isinstance(handler, logging.StreamHandler) and type(handler).__module__ == "prefect.logging.handlers"
