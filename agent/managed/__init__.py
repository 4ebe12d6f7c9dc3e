"""AWS managed job templates (AWS-Reboot, AWS-Download-File, AWS-Install-Application...) run
through safe built-in handlers instead of the scripts the documents name.

    for filter_, value, handler in managed_handlers(settings):
        job_client.add_handler(filter_, value, handler)

or ``register_managed_handlers(job_client, settings)``. Settings errors (SettingsError) are
raised at once, before the agent starts.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from agent.managed.document import (
    DOWNLOAD,
    INSTALL,
    MANAGED_TEMPLATE,
    REBOOT,
    REMOVE,
    RESTART,
    RUN,
    START,
    STOP,
    get_document_kind,
    get_managed_action,
    is_managed_document,
)
from agent.managed.download import DownloadAction
from agent.managed.packages import InstallAction, RemoveAction
from agent.managed.reboot import RebootAction
from agent.managed.run_command import RunCommandAction
from agent.managed.services import ServiceAction
from agent.managed.settings import ManagedSettings, load_managed_settings
from agent.managed.steps import Action, DisabledAction, ManagedJobHandler

__all__ = [
    "ManagedJobHandler",
    "build_actions",
    "get_document_kind",
    "get_managed_action",
    "is_managed_document",
    "managed_handlers",
    "register_managed_handlers",
]

HandlerSpec = Tuple[Callable[[Any], Any], Any, Callable[..., Any]]


def _package_actions(settings: Any, apt_settings: Any) -> Dict[str, Action]:
    """Install-Application and Remove-Application through the APT handler, when it is
    installed and ``[apt]`` settings are given."""
    try:
        from agent.apt.handler import AptUpdateHandler
        from agent.apt.settings import load_apt_settings
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("agent.apt"):
            raise
        why = "package actions need the APT handler (agent/apt), which is not installed"
        return {INSTALL: DisabledAction(INSTALL, why), REMOVE: DisabledAction(REMOVE, why)}
    if apt_settings is None and settings is not None:
        apt_settings = load_apt_settings(settings)
    if apt_settings is None:
        why = "package actions need [apt] settings"
        return {INSTALL: DisabledAction(INSTALL, why), REMOVE: DisabledAction(REMOVE, why)}
    handler = AptUpdateHandler(apt_settings)
    return {INSTALL: InstallAction(handler), REMOVE: RemoveAction(handler)}


def build_actions(
    managed: ManagedSettings, settings: Any = None, apt_settings: Any = None
) -> Dict[str, Action]:
    """The built-in action for each managed action name. The package actions take their
    ``[apt]`` settings from ``settings`` (or ``apt_settings``). Raises SettingsError."""
    actions: Dict[str, Action] = {
        START: ServiceAction(START, managed.services),
        STOP: ServiceAction(STOP, managed.services),
        RESTART: ServiceAction(RESTART, managed.services),
        REBOOT: RebootAction(managed.reboot),
        DOWNLOAD: DownloadAction(managed.download),
        RUN: RunCommandAction(managed.run_command),
    }
    actions.update(_package_actions(settings, apt_settings))
    return actions


def managed_handlers(settings: Any) -> List[HandlerSpec]:
    """(filter, value, handler) for JobClient.add_handler: every managed document (schema 1.0
    or operation form) goes to one handler, so that a handler this agent does not ship, a
    malformed step or a disabled action is REJECTED with a reason that says which and why.
    Raises SettingsError."""
    managed = load_managed_settings(settings)
    handler = ManagedJobHandler(
        build_actions(managed, settings), managed.state_dir, managed.step_timeout_seconds
    )
    return [(get_document_kind, MANAGED_TEMPLATE, handler)]


def register_managed_handlers(job_client: Any, settings: Any) -> None:
    """Add the managed-template handlers to ``job_client``. Raises SettingsError."""
    for filter_, value, handler in managed_handlers(settings):
        job_client.add_handler(filter_, value, handler)
