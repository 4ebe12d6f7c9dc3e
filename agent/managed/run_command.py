"""Run-Command: an allow-listed program with the document's arguments, never through a shell.

Off unless ``[run_command] enabled = yes``, and then only programs named in
``[run_command] allowed_commands`` run (by the name the document gives, or by the absolute path
it resolves to on ``[run_command] path``). The ``command`` text is split at commas as the
device client splits it (``\\,`` keeps a comma), and each piece is one argument: shell syntax
(``;``, ``$(...)``, ``|``) is handed to the program as text, never interpreted.
``runAsUser`` must be the agent's own account or one of ``[run_command] allowed_users``; the
child drops to it (user, group, supplementary groups) before the program starts, with a small
fixed environment. A step interrupted by an agent restart is not run again.

A command that would update or restart this agent itself (a program inside the agent's own
installation, such as ``systemd/install.sh``, or an argument naming ``iot-jobs-agent``: its
package, unit or .deb) is refused (SELF_UPDATE): the agent's own stop would end the step, and
with it the job, untruthfully. The supported way is an APT_UPDATE job for the
``iot-jobs-agent`` Debian package, whose new agent reports the job (docs/debian-package.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from agent.errors import JobFailed, JobRejected
from agent.managed.document import Step
from agent.managed.settings import RunCommandSettings
from agent.managed.steps import NOT_ALLOWED, Action, StepOutcome, StepRun
from agent.process import User, child_environment, current_user, lookup_user, run_process

AGENT_HOME = Path(__file__).resolve().parents[2]  # the folder holding jobs_agent.py
AGENT_NAME = "iot-jobs-agent"  # the Debian package and the systemd unit
SELF_UPDATE = "SELF_UPDATE"


def updates_this_agent(program: str, arguments: Sequence[str]) -> bool:
    """True when ``program`` lies inside the agent's own installation or an argument names
    the agent's package, unit or .deb (``iot-jobs-agent``, ``iot-jobs-agent.service``,
    ``./iot-jobs-agent_1.1_all.deb``, ``iot-jobs-agent=1.1``)."""
    if Path(program).resolve().is_relative_to(AGENT_HOME):
        return True
    return any(os.path.basename(argument).startswith(AGENT_NAME) for argument in arguments)


class RunCommandAction(Action):
    """The Run-Command action."""

    name = "Run-Command"
    rerun_safe = False  # an arbitrary command may not be idempotent
    own_user_only = False

    def __init__(self, settings: RunCommandSettings) -> None:
        self._settings = settings

    def _program(self, step: Step) -> str:
        settings = self._settings
        word = step.command[0]
        if "/" in word:
            resolved: Optional[str] = word if os.path.isabs(word) else None
        else:
            resolved = shutil.which(word, path=settings.search_path)
        allowed = settings.allowed_commands
        if word not in allowed and (resolved is None or resolved not in allowed):
            raise JobRejected(
                f"{step.label}: command {word!r} is not in [run_command] allowed_commands",
                NOT_ALLOWED,
            )
        if resolved is None or not os.access(resolved, os.X_OK):
            raise JobRejected(
                f"{step.label}: command {word!r} not found on {settings.search_path}",
                NOT_ALLOWED,
            )
        return resolved

    def _user(self, step: Step) -> User:
        agent = current_user()
        name = step.run_as_user
        if not name or name == agent.name:
            return agent
        if name not in self._settings.allowed_users:
            raise JobRejected(
                f"{step.label}: runAsUser {name!r} is not in [run_command] allowed_users",
                NOT_ALLOWED,
            )
        user = lookup_user(name)
        if user is None:
            raise JobRejected(f"{step.label}: runAsUser {name!r}: no such user", NOT_ALLOWED)
        if agent.uid != 0:
            raise JobRejected(
                f"{step.label}: runAsUser {name!r}: the agent ({agent.name}) cannot switch users",
                NOT_ALLOWED,
            )
        return user

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        if not self._settings.enabled:
            raise JobRejected(
                f"{step.label}: Run-Command is disabled: set [run_command] enabled = yes and "
                "list the programs in allowed_commands",
                NOT_ALLOWED,
            )
        program = self._program(step)
        if updates_this_agent(program, step.command[1:]):
            raise JobRejected(
                f"{step.label}: {step.command[0]!r} would update or restart this agent, and its "
                f"own stop would end this job untruthfully; update the agent with an APT_UPDATE "
                f"job for the {AGENT_NAME} Debian package instead (docs/debian-package.md)",
                SELF_UPDATE,
            )
        user = self._user(step)
        argv = (program,) + step.command[1:]
        return lambda run: self._run(run, argv, user)

    def _run(self, run: StepRun, argv: Tuple[str, ...], user: User) -> StepOutcome:
        step = run.step
        try:
            result = run_process(
                argv,
                timeout=run.timeout,
                should_stop=run.job.should_stop,
                user=user,
                env=child_environment(user, self._settings.search_path),
            )
        except OSError as error:
            raise JobFailed(f"cannot run {argv[0]}: {error}", "COMMAND_FAILED") from None
        output = {"stderr": result.stderr, "stdout": result.stdout}
        if not result.ok:
            code = "TIMEOUT" if result.timed_out else "COMMAND_FAILED"
            raise JobFailed(f"{step.command[0]}: {result.describe()}", code, output)
        if step.allow_stderr is not None and result.stderr_lines > step.allow_stderr:
            raise JobFailed(
                f"{step.command[0]} wrote {result.stderr_lines} lines to stderr; "
                f"allowStdErr is {step.allow_stderr}",
                "STDERR",
                output,
            )
        return StepOutcome(
            f"{step.command[0]}: exit status 0 (as {user.name})",
            stdout=result.stdout,
            stderr=result.stderr,
        )
