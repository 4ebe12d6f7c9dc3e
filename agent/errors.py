"""The one exception tree of the agent, branched by cause."""

from __future__ import annotations

from typing import Mapping, Optional


class AgentError(Exception):
    """Root of every error this agent raises."""


class SettingsError(AgentError, ValueError):
    """The settings file is missing, unreadable or holds a bad value."""


class UrlRefused(AgentError):
    """A URL (a download's redirect target) the agent will not fetch."""


class JobError(AgentError):
    """A job ends in a terminal status with a reason."""

    def __init__(
        self,
        reason: str,
        code: Optional[str] = None,
        details: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.details = dict(details) if details else {}


class JobRejected(JobError):
    """The job document is refused: reported REJECTED, never retried."""


class JobFailed(JobError):
    """The job was tried and did not succeed: reported FAILED."""


class JobHandedOver(JobError):
    """The job goes on at the agent's next start (raised while the agent is stopping): no
    status is reported now; the next start runs the handler again with ``attempt`` + 1."""
