"""Start-Application, Stop-Application, Restart-Application: systemd units from an allow-list.

``systemctl <verb> -- <unit>...`` runs as a list of arguments, never through a shell; unit names
are checked against systemd's character set, may not start with ``-`` (no option injection)
and must match ``[services] allowed``. Restarting the agent's own unit (``agent_unit``) is
queued with ``--no-block`` after every other unit, and the step succeeds once systemd accepted
it: the job is reported SUCCEEDED by this process or, should it be gone first, from the journal
by the next one; either way it is never run again (the device client restarted itself forever
this way, gh:awslabs/aws-iot-device-client#365).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, List, Sequence

from agent.errors import JobFailed, JobRejected
from agent.managed.document import RESTART, START, STOP, Step, words_of
from agent.managed.settings import ServicesSettings
from agent.managed.steps import (
    NOT_ALLOWED,
    Action,
    StepOutcome,
    StepRun,
    agent_stopping,
    stop_step,
)
from agent.process import run_process

VERBS = {START: "start", STOP: "stop", RESTART: "restart"}
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,256}")
UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".mount",
    ".automount",
    ".path",
    ".slice",
    ".swap",
)


def unit_name(word: str) -> str:
    """``nginx`` -> ``nginx.service``; a name with a unit suffix is kept. Raises ValueError."""
    if not UNIT_NAME.fullmatch(word) or word.startswith("-") or word.startswith("."):
        raise ValueError(word)
    return word if word.endswith(UNIT_SUFFIXES) else word + ".service"


def is_allowed(unit: str, allowed: Sequence[str]) -> bool:
    """True when ``unit`` (or its name without ``.service``) matches an allowed name or glob."""
    short = unit[: -len(".service")] if unit.endswith(".service") else unit
    return any(
        fnmatch.fnmatchcase(unit, pattern) or fnmatch.fnmatchcase(short, pattern)
        for pattern in allowed
    )


class ServiceAction(Action):
    """One of the three service actions."""

    def __init__(self, name: str, settings: ServicesSettings) -> None:
        self.name = name
        self.verb = VERBS[name]
        self._settings = settings

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        settings = self._settings
        if not settings.allowed:
            raise JobRejected(
                f"{step.label}: no service may be managed: list them in [services] allowed",
                NOT_ALLOWED,
            )
        words = words_of(step.args)
        if not words:
            raise JobRejected(
                f"{step.label}: no services given (args: one space-separated string of names)",
                "INVALID_DOCUMENT",
            )
        units: List[str] = []
        for word in words:
            try:
                unit = unit_name(word)
            except ValueError:
                raise JobRejected(
                    f"{step.label}: {word!r} is not a systemd unit name", "INVALID_DOCUMENT"
                ) from None
            if not is_allowed(unit, settings.allowed):
                raise JobRejected(
                    f"{step.label}: service {unit!r} is not in [services] allowed "
                    f"({', '.join(settings.allowed)})",
                    NOT_ALLOWED,
                )
            if unit == settings.agent_unit and self.verb == "stop":
                raise JobRejected(
                    f"{step.label}: stopping {unit} would stop this agent for good", NOT_ALLOWED
                )
            if unit not in units:
                units.append(unit)
        return lambda run: self._run(run, units)

    def _systemctl(self, run: StepRun, arguments: Sequence[str]) -> None:
        settings = self._settings
        argv = list(settings.systemctl) + list(arguments)
        try:
            result = run_process(
                argv,
                timeout=min(settings.timeout_seconds, run.timeout),
                should_stop=run.job.should_stop,
            )
        except OSError as error:
            raise JobFailed(
                f"cannot run {argv[0]}: {error.strerror or error}", "SERVICE_FAILED"
            ) from None
        if not result.ok:
            raise JobFailed(
                f"systemctl {' '.join(arguments)}: {result.describe()}",
                "SERVICE_FAILED",
                {"stderr": result.stderr, "stdout": result.stdout},
            )

    def _run(self, run: StepRun, units: List[str]) -> StepOutcome:
        agent_unit = self._settings.agent_unit
        own = agent_unit in units
        others = [unit for unit in units if unit != agent_unit]
        if own and run.data.get("agentRestartQueued"):
            # This process is the one the queued restart started.
            return StepOutcome(f"{agent_unit} restarted (this agent runs again)")
        if others:
            self._systemctl(run, [self.verb, "--"] + others)
        summary = f"{self.verb} {' '.join(others)}: done" if others else ""
        if own:
            run.save({"agentRestartQueued": True})
            try:
                self._systemctl(run, [self.verb, "--no-block", "--", agent_unit])
            except JobFailed:
                if agent_stopping(run):
                    # The restart began before systemctl returned: the next start (the
                    # restarted agent) finds agentRestartQueued and reports SUCCEEDED.
                    stop_step(run, f"{agent_unit} is restarting")
                raise
            own_text = f"{self.verb} of {agent_unit} (this agent) queued"
            summary = f"{summary}; {own_text}" if summary else own_text
        return StepOutcome(summary)
