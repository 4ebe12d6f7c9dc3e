"""The job client's protocol state: the execution in hand, the request in flight, the events
the protocol thread reads, and the named states that say what happens next (pure data).

``JobPhase``: where the execution in hand stands (RUNNING: progress and heartbeats are sent;
FINAL: the decided status is sent until the service takes it; GONE: the service ended it).
``Mode``: what the client as a whole does (CONNECTING, LISTENING, STOPPING).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from agent.dispatch import Registration
from agent.job import JobContext, Outcome, Status

SUBSCRIPTIONS = (
    "notify-next",
    "start-next/accepted",
    "start-next/rejected",
    "+/update/accepted",
    "+/update/rejected",
)
RUN_ID_KEY = "agentRun"  # statusDetails key start-next sets, naming the agent run that claimed
RETRYABLE_CODES = frozenset(("RequestThrottled", "InternalError"))
GONE_CODES = frozenset(("InvalidStateTransition", "TerminalStateReached", "ResourceNotFound"))
SERVICE_TERMINAL_STATUSES = frozenset(
    ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
)


def text_or_none(value: Any) -> Optional[str]:
    """``value`` when it is a string (service messages are untrusted), else None."""
    return value if isinstance(value, str) else None


class JobPhase(enum.Enum):
    """Where the execution in hand stands, as far as reporting goes."""

    RUNNING = "running"  # the handler runs (or starts): progress and heartbeats are sent
    FINAL = "final"  # the final status (``final``) is decided: sent until the service takes it
    GONE = "gone"  # the service ended the execution (``gone`` says why): nothing is sent


class Mode(enum.Enum):
    """What the client as a whole is doing."""

    CONNECTING = "connecting"  # until the first connect and subscribe worked
    LISTENING = "listening"  # claims work, runs it, reports it
    STOPPING = "stopping"  # takes no new job; ends once the job in hand is settled


@dataclass
class Execution:
    """The execution in hand, as the protocol thread sees it."""

    job_id: str
    execution_number: int
    version: int
    attempt: int = 0
    document: Any = None
    registration: Optional[Registration] = None
    context: Optional[JobContext] = None
    phase: JobPhase = JobPhase.RUNNING
    final: Optional[Outcome] = None  # decided, not yet acknowledged (phase FINAL)
    final_fallback: int = 0  # how far the final statusDetails were cut after InvalidRequest
    gone: str = ""  # why the service no longer takes updates for it (phase GONE)
    document_cut: bool = False  # parts nested too deeply to read were cut from the message
    last_update_at: float = 0.0
    next_progress_at: float = 0.0
    check_wanted: bool = False
    phase_shown: str = ""  # the progress ``phase`` last told to the activity

    @property
    def key(self) -> Tuple[str, int]:
        return (self.job_id, self.execution_number)


class Send(enum.Enum):
    """The request the client sends next (``JobClient._next_send`` decides)."""

    CLAIM = "claim"  # start-next: no job in hand and work may be waiting
    FINAL = "final"  # the decided final status
    PROGRESS = "progress"  # IN_PROGRESS with the handler's latest progress
    HEARTBEAT = "heartbeat"  # IN_PROGRESS to refresh the step timer (or check the job)


class RequestKind(enum.Enum):
    """The two requests a device makes."""

    CLAIM = "start-next"
    UPDATE = "update"


@dataclass
class Request:
    """A request in flight, awaiting the reply with its token."""

    kind: RequestKind
    token: str
    deadline: float
    job: Optional[Execution] = None
    status: Optional[Status] = None


class Event(enum.Enum):
    """What wakes the protocol thread."""

    MESSAGE = "message"
    ONLINE = "online"
    OFFLINE = "offline"
    PROGRESS = "progress"
    DONE = "done"
    STOP = "stop"
