"""What the agent is doing right now, told to whoever shows it (systemd STATUS=, the status file).

``JobClient`` calls these methods on the protocol thread as its state changes; they must be
cheap and never raise. The base class does nothing: the agent wires in a subclass that
writes the state directory's status file and systemd's ``STATUS=`` line.
"""

from __future__ import annotations

from typing import Optional


class Activity:
    """Receives the agent's state changes; every method is a no-op here."""

    def connecting(self, error: Optional[str] = None) -> None:
        """Connecting (again); ``error`` says why the last attempt failed, if one did."""

    def connected(self) -> None:
        """Connected and subscribed: idle unless a job runs."""

    def offline(self) -> None:
        """The connection went down."""

    def job_started(self, job_id: str, attempt: int) -> None:
        """A handler started for ``job_id``."""

    def job_phase(self, job_id: str, phase: str) -> None:
        """The running job reported progress; ``phase`` is a short word such as downloading."""

    def job_handed_over(self, job_id: str, reason: str) -> None:
        """The running job is left to the next start of the agent."""

    def job_finished(self, job_id: str, status: str, reason: Optional[str] = None) -> None:
        """The final status of ``job_id`` is decided (SUCCEEDED, FAILED, REJECTED, ...)."""

    def stopping(self) -> None:
        """The agent is shutting down."""
