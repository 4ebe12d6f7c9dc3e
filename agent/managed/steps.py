"""Run the steps of a managed document with built-in actions, the way the device client does.

Meaning kept from the AWS IoT Device Client (source/jobs/README.md): ``steps`` run in order and
the first failure ends the job, unless the step says ``"ignoreStepFailure": "true"``;
``finalStep`` runs only when every step succeeded; ``includeStdOut`` puts the tail of the
program output into statusDetails; ``runAsUser`` names the account a step runs as.

Differences, for safety: every step is checked before the first one runs (a bad fourth step
rejects the job before the first changes anything); a step runs only through the built-in
action its handler name selects; progress through the steps is kept in the state directory, so
after an agent restart (or the reboot a Reboot step asked for) finished steps are not run again
and the interrupted step is resumed only when its action can safely run twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple

from agent.errors import JobError, JobFailed, JobHandedOver, JobRejected
from agent.job import JobContext
from agent.managed.document import (
    ACTIONS,
    DEFAULT_PATHS,
    HANDLER_ACTIONS,
    ManagedDocument,
    Step,
    masked_document_key,
    parse_managed_document,
)
from agent.process import current_user

log = logging.getLogger(__name__)

NOT_SUPPORTED = "NOT_SUPPORTED"
NOT_ALLOWED = "NOT_ALLOWED"
STATE_FOLDER = "managed"


@dataclass
class StepOutcome:
    """What a finished step reports: a one-line ``summary`` and the tails of its output."""

    summary: str
    stdout: str = ""
    stderr: str = ""
    details: Dict[str, str] = field(default_factory=dict)


class StepRun:
    """What a running step may use: the job, its deadline and its own saved data."""

    def __init__(
        self, job: JobContext, step: Step, deadline_seconds: float, progress: StepProgress
    ):
        self.job = job
        self.step = step
        self.timeout = deadline_seconds
        self._progress = progress
        self.key = step.where

    @property
    def data(self) -> Dict[str, Any]:
        """Data this step saved before an agent restart ({} on a first run)."""
        return dict(self._progress.data.get(self.key, {}))

    def save(self, data: Mapping[str, Any]) -> None:
        """Keep ``data`` for this step across agent restarts (written and flushed at once)."""
        self._progress.data[self.key] = dict(data)
        self._progress.save()


def agent_stopping(run: StepRun) -> bool:
    """True once the agent is shutting down (not when the service canceled the job)."""
    return run.job.agent_stopping()


def stop_step(run: StepRun, what: str) -> NoReturn:
    """End a step because its job should stop.

    When the agent is shutting down, raises JobHandedOver: the job client reports nothing and
    the step goes on after the restart with the data it saved. Otherwise (the service canceled
    the job or it timed out there) raises JobFailed with errorCode STOPPED.
    """
    if agent_stopping(run):
        raise JobHandedOver(f"{run.step.label}: {what}; it goes on when the agent runs again")
    reason = run.job.stop_reason
    raise JobFailed(f"{what} ({reason or 'stopped'})", "STOPPED")


class Action:
    """A built-in action. ``check`` refuses what it will not do (JobRejected) before any step
    runs and returns a function that carries the step out (raising JobFailed)."""

    name = ""
    rerun_safe = True  # may a step interrupted by an agent restart run again?
    own_user_only = True  # runAsUser must be empty or the agent's own account

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        raise NotImplementedError


class DisabledAction(Action):
    """An action the settings leave off: every step naming it is rejected with ``why``."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self._why = why

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        raise JobRejected(f"{step.label}: {self._why}", NOT_ALLOWED)


class StepProgress:
    """How far a job got through its steps, in ``<state_dir>/managed/<job id>.json``."""

    def __init__(self, path: Path, execution_number: int, document_key: str) -> None:
        self.path = path
        self.execution_number = execution_number
        self.document_key = document_key
        self.completed: List[str] = []
        self.current: Optional[str] = None
        self.data: Dict[str, Dict[str, Any]] = {}
        self.ignored: List[str] = []

    @classmethod
    def open(cls, state_dir: Path, job: JobContext, document: Mapping[str, Any]) -> StepProgress:
        """The saved progress of this execution of this document, when resumed (attempt > 1);
        a fresh one otherwise. A different execution or document starts afresh."""
        key = hashlib.sha256(masked_document_key(document).encode()).hexdigest()
        path = Path(state_dir) / STATE_FOLDER / f"{job.job_id}.json"
        progress = cls(path, job.execution_number, key)
        if job.attempt <= 1:
            return progress
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return progress
        except (OSError, ValueError) as error:
            log.warning(
                "job %s: step progress %s unreadable (%s); starting over", job.job_id, path, error
            )
            return progress
        if (
            isinstance(saved, dict)
            and saved.get("executionNumber") == job.execution_number
            and saved.get("document") == key
        ):
            progress.completed = [str(item) for item in saved.get("completed", [])]
            current = saved.get("current")
            progress.current = str(current) if current else None
            data = saved.get("data")
            progress.data = data if isinstance(data, dict) else {}
            progress.ignored = [str(item) for item in saved.get("ignored", [])]
        else:
            log.info("job %s: saved step progress is for another execution or document", job.job_id)
        return progress

    def save(self) -> None:
        """Write atomically and durably. Raises OSError."""
        text = json.dumps(
            {
                "executionNumber": self.execution_number,
                "document": self.document_key,
                "completed": self.completed,
                "current": self.current,
                "data": self.data,
                "ignored": self.ignored,
            },
            sort_keys=True,
        )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", self.path, error)


def _check_handler_step(step: Step) -> None:
    if step.type == "runHandler" and not step.action:
        known = ", ".join(sorted(HANDLER_ACTIONS))
        raise JobRejected(
            f"{step.where}: handler {step.handler!r} is not built into this agent, which never "
            f"runs scripts a job document names (built in: {known}, and runCommand)",
            NOT_SUPPORTED,
        )
    if step.type == "runHandler" and step.path.strip() not in DEFAULT_PATHS:
        raise JobRejected(
            f"{step.label}: path {step.path!r} names a handler folder; this agent runs only its "
            'built-in handlers: leave pathToHandler empty or "default"',
            NOT_SUPPORTED,
        )


class ManagedJobHandler:
    """The job handler for managed-template documents (see the module docstring).

    ``actions`` maps each action name (document.ACTIONS) to its built-in Action. Returns
    statusDetails; raises JobRejected for a document it will not run, JobFailed when a step
    failed.
    """

    safe_to_rerun = True  # per step: see StepProgress and Action.rerun_safe

    def __init__(
        self, actions: Mapping[str, Action], state_dir: Path, step_timeout_seconds: float
    ) -> None:
        self._actions = dict(actions)
        self._state_dir = Path(state_dir)
        self._step_timeout = step_timeout_seconds

    @property
    def handles(self) -> str:
        """What this handler runs, for the reason a document no handler takes is rejected."""
        names = ", ".join(f"AWS-{action}" for action in ACTIONS if action in self._actions)
        return f"the AWS managed templates {names}"

    def check(self, document: Mapping[str, Any]) -> Tuple[ManagedDocument, list]:
        """Parse and check every step; the runners in order. Raises JobRejected."""
        parsed = parse_managed_document(document)
        agent_user = current_user().name
        plan = []
        for step in parsed.all_steps():
            _check_handler_step(step)
            action = self._actions.get(step.action)
            if action is None:
                raise JobRejected(f"{step.label}: this action is not available", NOT_SUPPORTED)
            if action.own_user_only and step.run_as_user not in ("", agent_user):
                raise JobRejected(
                    f"{step.label}: runAsUser {step.run_as_user!r}: this action runs as the "
                    f"agent's own user ({agent_user}); leave runAsUser empty or name {agent_user}",
                    NOT_ALLOWED,
                )
            plan.append((step, action, action.check(step)))
        return parsed, plan

    def __call__(self, document: Mapping[str, Any], job: JobContext) -> Dict[str, str]:
        parsed, plan = self.check(document)
        progress = StepProgress.open(self._state_dir, job, document)
        results: List[Tuple[Step, StepOutcome]] = []
        for index, (step, action, run) in enumerate(plan):
            if step.where in progress.completed:
                job.log.info("%s: already done before the restart", step.label)
                continue
            if progress.current == step.where and not action.rerun_safe:
                progress.remove()
                raise JobFailed(
                    f"{step.label} was interrupted by an agent restart; it is not run twice",
                    "INTERRUPTED",
                    {"failedStep": step.label},
                )
            job.report_progress({"step": f"{index + 1}/{len(plan)}", "action": step.label})
            progress.current = step.where
            progress.save()
            job.log.info("%s: starting", step.label)
            try:
                outcome = run(StepRun(job, step, self._step_timeout, progress))
            except JobHandedOver:
                job.log.info("%s: continues after the agent restarts", step.label)
                raise
            except JobError as error:
                if isinstance(error, JobRejected):
                    progress.remove()
                    raise
                if step.ignore_failure:
                    job.log.warning("%s failed (ignored): %s", step.label, error.reason)
                    progress.ignored.append(f"{step.label}: {error.reason}")
                    progress.completed.append(step.where)
                    progress.current = None
                    progress.save()
                    continue
                progress.remove()
                raise self._step_failure(step, error, parsed.include_stdout) from None
            except BaseException:
                progress.remove()
                raise
            job.log.info("%s: %s", step.label, outcome.summary)
            results.append((step, outcome))
            progress.completed.append(step.where)
            progress.current = None
            progress.save()
        progress.remove()
        # Reaching here, no step failed unignored: finalStep ran in the loop (it is last).
        return self._success_details(parsed, results, progress.ignored)

    @staticmethod
    def _step_failure(step: Step, error: JobFailed, include_stdout: bool) -> JobFailed:
        details: Dict[str, str] = {"failedStep": step.label}
        for key, value in error.details.items():
            if key == "stdout" and not include_stdout:
                continue
            details[key] = value
        return JobFailed(f"{step.label}: {error.reason}", error.code or "STEP_FAILED", details)

    @staticmethod
    def _success_details(
        parsed: ManagedDocument,
        results: List[Tuple[Step, StepOutcome]],
        ignored: List[str],
    ) -> Dict[str, str]:
        total = len(parsed.all_steps())
        details: Dict[str, str] = {"result": f"{total - len(ignored)} of {total} steps succeeded"}
        if ignored:
            details["ignoredFailures"] = "; ".join(ignored)
        for step, outcome in results[-4:]:
            details[step.where.replace("[", "").replace("]", "")] = (
                f"{step.action}: {outcome.summary}"
            )
        if results:
            last = results[-1][1]
            for key, value in last.details.items():
                details.setdefault(key, value)
            if parsed.include_stdout and last.stdout:
                details["stdout"] = last.stdout
        return details
