"""Reboot: record the boot id, run the reboot command, and check the boot id after restart.

On its first run the step saves the current boot id (``/proc/sys/kernel/random/boot_id``, new
on every boot) in the step progress under the state directory, then runs ``[reboot] command``.
When the agent runs again after the reboot, the job is resumed and the same step compares boot
ids: changed means the device rebooted (SUCCEEDED); unchanged means the agent restarted without
a reboot (FAILED). Comparing ids, not boot times, avoids the clock trouble that made the device
client report every reboot FAILED (gh:awslabs/aws-iot-device-client#338).

An orderly reboot stops the agent (SIGTERM) before the device goes down. The step then raises
JobHandedOver: the job client reports nothing, and the agent's next start resumes the step,
which judges the reboot by the boot id. A job the service canceled never reboots and fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from agent.errors import JobFailed, JobRejected
from agent.managed.document import Step
from agent.managed.settings import RebootSettings
from agent.managed.steps import (
    NOT_ALLOWED,
    Action,
    StepOutcome,
    StepRun,
    agent_stopping,
    stop_step,
)
from agent.process import run_process

COMMAND_TIMEOUT_SECONDS = 60.0


def read_boot_id(path: Path) -> str:
    """The boot id in ``path``. Raises JobFailed when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise JobFailed(f"cannot read the boot id from {path}: {error}", "BOOT_ID") from None
    if not text:
        raise JobFailed(f"no boot id in {path}", "BOOT_ID")
    return text


class RebootAction(Action):
    """The Reboot action."""

    name = "Reboot"

    def __init__(self, settings: RebootSettings) -> None:
        self._settings = settings

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        if not self._settings.enabled:
            raise JobRejected(
                f"{step.label}: reboot is disabled: set [reboot] enabled = yes", NOT_ALLOWED
            )
        return self._run

    def _run(self, run: StepRun) -> StepOutcome:
        settings = self._settings
        current = read_boot_id(settings.boot_id_file)
        before = run.data.get("bootId")
        if before is not None:
            if current != before:
                return StepOutcome("the device rebooted", details={"bootId": current})
            raise JobFailed(
                f"the agent restarted but the device did not reboot (boot id still {current})",
                "NOT_REBOOTED",
            )
        if run.job.should_stop():
            # Nothing asked for yet: a stopping agent hands the whole step to its next start;
            # a canceled job never reboots the device.
            stop_step(run, "the agent is stopping before the reboot was asked for")
        run.save({"bootId": current})
        command = list(settings.command)
        run.job.log.info("rebooting: %s (boot id %s)", " ".join(command), current)
        try:
            result = run_process(command, timeout=min(COMMAND_TIMEOUT_SECONDS, run.timeout))
        except OSError as error:
            run.save({})
            raise JobFailed(f"cannot run {command[0]}: {error}", "REBOOT_FAILED") from None
        if not result.ok:
            if agent_stopping(run):
                # The shutdown the command started may have ended the command too: keep the
                # boot id, so the next start judges the reboot by it.
                stop_step(run, f"the agent stopped while {command[0]} ran ({result.describe()})")
            run.save({})
            raise JobFailed(
                f"{' '.join(command)}: {result.describe()}",
                "REBOOT_FAILED",
                {"stderr": result.stderr, "stdout": result.stdout},
            )
        if run.job.wait(settings.wait_seconds):
            stop_step(run, "the agent stopped for the reboot")
        raise JobFailed(
            f"the reboot command succeeded but the device did not reboot within "
            f"{settings.wait_seconds:g} s",
            "NOT_REBOOTED",
        )
