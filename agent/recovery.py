"""What to do with a claimed execution, given what the journal says: crash recovery as a pure
decision, and the one place the job client writes the journal.

``decide`` is the whole policy (tests/test_job_client_recovery.py has it as a table): an
execution this agent already finished is not run twice; a final status the journal holds is
delivered; a run interrupted by an agent restart (RUNNING in the journal) starts again only
when its handler is ``safe_to_rerun`` and fewer than ``max_attempts`` starts were made, else
it is reported FAILED "interrupted by agent restart"; a run its handler handed over
(JobHandedOver while the agent stopped) continues; an execution the service shows IN_PROGRESS
that the journal does not know of is interrupted, unless the journal can be trusted (it
records RUNNING before any handler starts) or this run claimed it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Union

from agent.dispatch import Registration
from agent.job import Outcome, Status
from agent.journal import JobRecord, Journal, JournalState, Phase

log = logging.getLogger(__name__)

INTERRUPTED_REASON = "interrupted by agent restart"


@dataclass(frozen=True)
class Claim:
    """What start-next handed back: the execution, and the run id its statusDetails name
    (the agent run that claimed it; None when they name none)."""

    job_id: str
    execution_number: int
    claimed_by: Optional[str] = None


class Action(enum.Enum):
    """What the job client does with a claimed execution."""

    RUN = "run"  # record RUNNING (``attempt``) and start the handler
    REPORT = "report"  # record and send the final status ``outcome`` now
    DELIVER = "deliver"  # send the final status the journal holds
    LEAVE = "leave"  # claimed while stopping: leave it for the next start


@dataclass(frozen=True)
class Decision:
    """``decide``'s answer; ``note`` is what the log says about it (empty: nothing)."""

    action: Action
    attempt: int = 0
    interrupted: bool = False
    outcome: Optional[Outcome] = None
    registration: Optional[Registration] = None
    record: Optional[JobRecord] = None  # DELIVER: the journal's final status
    note: str = ""
    level: int = logging.INFO


# The handler for a claimed document: its registration, or the final status that refuses the
# document (not a JSON object, refused by the document gate, no handler takes it). Called with
# ``resumed``: True when the journal shows a handler already ran this execution (RUNNING or
# HANDED_OVER), so its document passed the gate before (the gate then skips the expiry).
Dispatch = Callable[[bool], Union[Registration, Outcome]]


def decide(
    claim: Claim,
    journal: JournalState,
    run_id: str,
    journal_trusted: bool,
    dispatch: Dispatch,
    max_attempts: int,
    stopping: bool = False,
) -> Decision:
    """What to do with ``claim`` (see the module docstring).

    ``journal.current`` must be this execution's record or None (the caller forgets a record
    of another execution first). ``dispatch`` is called only when the handler matters, so a
    duplicate or a journaled final status never reaches the document checks.
    """
    key = (claim.job_id, claim.execution_number)
    record = journal.current
    if record is not None and record.key != key:
        raise ValueError(f"the journal's record is for {record.key}, not {key}")
    if journal.has_finished(*key):
        return Decision(
            Action.REPORT,
            outcome=Outcome.failed(
                f"this agent already ran execution {claim.execution_number}; not running it "
                "twice",
                "DUPLICATE",
            ),
            note=f"execution {claim.execution_number} already finished here",
            level=logging.ERROR,
        )
    if record is not None and record.phase is Phase.FINAL:
        return Decision(Action.DELIVER, attempt=record.attempt, record=record)
    resumed = record is not None and record.phase in (Phase.RUNNING, Phase.HANDED_OVER)
    if record is not None and record.phase is Phase.RUNNING:
        attempt, interrupted, note = record.attempt + 1, True, ""
    elif record is not None and record.phase is Phase.HANDED_OVER:
        attempt, interrupted = record.attempt + 1, False
        note = "continuing after the agent restart, as its handler asked"
    elif claim.claimed_by == run_id or record is not None or journal_trusted:
        # Claimed now, or claimed by an earlier run that never started it: the journal
        # records RUNNING before any handler starts.
        attempt, interrupted, note = 1, False, ""
    else:
        attempt, interrupted = 2, True
        note = (
            "IN_PROGRESS since before this run and the journal has no record; treating it as "
            "interrupted"
        )
    level = logging.WARNING if interrupted else logging.INFO
    if stopping:
        return Decision(Action.LEAVE, attempt, interrupted, note=note, level=level)
    found = dispatch(resumed)
    if isinstance(found, Outcome):
        return Decision(Action.REPORT, attempt, interrupted, outcome=found, note=note, level=level)
    refusal = ""
    if interrupted and not found.safe_to_rerun:
        refusal, why = INTERRUPTED_REASON, f"{INTERRUPTED_REASON}; handler is not safe to re-run"
    elif attempt > max_attempts:
        refusal = why = f"{INTERRUPTED_REASON} {attempt - 1} times; giving up"
    if refusal:
        return Decision(
            Action.REPORT,
            attempt,
            interrupted,
            outcome=Outcome.failed(refusal, "INTERRUPTED"),
            registration=found,
            note=f"{note}; {why}" if note else why,
            level=logging.WARNING,
        )
    return Decision(Action.RUN, attempt, interrupted, registration=found, note=note, level=level)


class Ledger:
    """The job client's journal state, and the one place it is written.

    ``state`` is what the journal holds (or will hold after ``flush``). Without a journal
    nothing is written and nothing survives a restart.
    """

    def __init__(self, journal: Optional[Journal]) -> None:
        self.journal = journal
        self.state = JournalState()
        self.trusted = False
        self._unsaved = False  # state differs from the file (see finish)

    @property
    def current(self) -> Optional[JobRecord]:
        return self.state.current

    def open(self) -> None:
        """Load the journal and write it back at once: a state directory we cannot write is
        a start-up error (OSError), and from now on the file exists, so its silence about an
        execution is meaningful."""
        if self.journal is not None:
            self.state = self.journal.load()
            self.trusted = self.journal.trusted
            self.journal.save(self.state)

    def record(self, record: Optional[JobRecord], strict: bool = False) -> None:
        """Make ``record`` the job in hand (None: no job) and write the journal. A write error
        is logged, or raised (OSError) when ``strict``, in which case nothing changes."""
        self._save(self.state.with_current(record), strict)

    def record_final(self, job_id: str, execution_number: int, version: int, attempt: int,
                     outcome: Outcome) -> None:
        """Record the final status decided for an execution, before it is sent."""
        self.record(
            JobRecord(
                job_id,
                execution_number,
                version,
                Phase.FINAL,
                attempt,
                status=outcome.status.value,
                status_details=dict(outcome.details),
            )
        )

    def finish(self, job_id: str, execution_number: int) -> None:
        """Remember the execution as finished, with no job in hand, in memory only: the
        journal learns it with its next write (``record`` or ``flush``)."""
        self.state = self.state.finish(job_id, execution_number)
        self._unsaved = True

    def flush(self) -> None:
        """Write what ``finish`` kept in memory, unless a later write wrote it already."""
        if self._unsaved:
            self._save(self.state)

    def _save(self, state: JournalState, strict: bool = False) -> None:
        if self.journal is not None:
            try:
                self.journal.save(state)
            except OSError as error:
                if strict:
                    raise
                log.error("cannot write the journal %s: %s", self.journal.path, error)
        self.state = state
        self._unsaved = False


def final_outcome(record: JobRecord) -> Outcome:
    """The final status a FINAL journal record holds."""
    return Outcome(Status(record.status), dict(record.status_details))
