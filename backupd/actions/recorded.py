"""The discipline of every recorded piece of work, written once (healthchecks' unit of
work): the caller writes its row before anything happens; ``settle`` completes it from
how the work ended.

- a stop (``StoppedError``: a shutdown, a signal; Ctrl-C) -> ``stopped``: interrupted, no
  alert (Ctrl-C propagates);
- any other ``BackupdError`` -> ``failed``, with its stderr tail and whether trying again
  may help (``transient``);
- anything else (a bug) -> ``crashed``: the row is completed as failed, then it propagates.

A verb that reports failures as outcomes (backup, maintenance) reads the ``Ending`` after
the block; one that lets them propagate (restores) passes ``reraise=True``. Success is
completed by the caller, which knows what it made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from backupd.catalogue import RunStatus
from backupd.errors import BackupdError, StoppedError, summarize_stderr

How = Literal["ok", "stopped", "failed", "crashed"]


@dataclass
class Ending:
    how: How = "ok"
    error: str | None = None  # one line: "LABEL: what failed: the stderr tail's summary"
    stderr_tail: str | None = None  # set when a command's stderr told why
    transient: bool = False
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.how == "ok"

    @property
    def run_status(self) -> RunStatus:
        """The run row's status: a stop is interrupted, a failure or a crash failed."""
        if self.how == "ok":
            return RunStatus.SUCCEEDED
        return RunStatus.INTERRUPTED if self.how == "stopped" else RunStatus.FAILED

    def ended(self, how: How, label: str | None, text: str, e: BaseException) -> None:
        self.how, self.exception = how, e
        self.error = f"{label}: {text}" if label else text


def with_tail(e: BackupdError) -> str:
    """The error's line, with the summary of the stderr tail that told why (if any)."""
    tail = e.stderr_tail
    return f"{e}: {summarize_stderr(tail)}" if tail else str(e)


@contextmanager
def settle(
    label: str | None, finish: Callable[[Ending], None], *, reraise: bool = False
) -> Iterator[Ending]:
    """Around work whose row is written: ``finish(ending)`` completes the row when it did
    not succeed. ``label`` leads the error line ("web1/maindb"; None: the error alone)."""
    ending = Ending()
    try:
        yield ending
    except StoppedError as e:
        ending.ended("stopped", label, str(e), e)
        ending.transient = e.transient  # the catch-up runs it again (not a closed window)
        finish(ending)
        if reraise:
            raise
    except BackupdError as e:
        ending.ended("failed", label, with_tail(e), e)
        ending.stderr_tail, ending.transient = e.stderr_tail, e.transient
        finish(ending)
        if reraise:
            raise
    except KeyboardInterrupt as e:  # Ctrl-C at a terminal: a stop, not a bug
        ending.ended("stopped", label, "stopped: interrupted (Ctrl-C)", e)
        finish(ending)
        raise
    except BaseException as e:
        ending.ended("crashed", label, f"internal error: {type(e).__name__}: {e}", e)
        finish(ending)
        raise
