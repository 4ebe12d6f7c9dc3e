"""Install-Application and Remove-Application through the APT handler.

The template's ``packages`` argument (one space-separated string) becomes a request for those
packages, so each name goes through the APT handler's checks: Debian name alphabet,
``[apt] allowed_packages``, and the worker's plan checks. An install removes nothing and changes
nothing outside the request that is not a dependency; a removal removes exactly the named
packages: never an Essential or Priority required one, never a package that depends on them
(named in the refusal), never anything else. Names are only ever cache look-ups, never
command-line words.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from agent.errors import JobRejected
from agent.managed.document import Step, words_of
from agent.managed.steps import Action, StepOutcome, StepRun


def _package_request(step: Step, apt_settings: Any) -> Any:
    """The step's package names as a checked AptRequest. Raises JobRejected naming the step."""
    from agent.apt.document import parse_document

    words = words_of(step.args)
    if not words:
        raise JobRejected(
            f"{step.label}: no packages given (args: one space-separated string of names)",
            "INVALID_DOCUMENT",
        )
    document: Dict[str, Any] = {"jobType": "APT_UPDATE", "aptPackages": list(words)}
    try:
        return parse_document(document, apt_settings.allowed_packages)
    except JobRejected as error:
        raise JobRejected(f"{step.label}: packages: {error.reason}", error.code) from None


def _summary(details: Dict[str, str], request: Any) -> str:
    names = " ".join(package.name for package in request.packages)
    return f"{details.get('result', 'done')}: {names}"


class InstallAction(Action):
    """Install-Application: the packages, at their candidate versions, in one transaction."""

    name = "Install-Application"

    def __init__(self, apt_handler: Any) -> None:
        self._apt = apt_handler  # agent.apt.handler.AptUpdateHandler

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        request = _package_request(step, self._apt.settings)
        return lambda run: self._run(run, request)

    def _run(self, run: StepRun, request: Any) -> StepOutcome:
        details = dict(self._apt(request.to_json(), run.job) or {})
        return StepOutcome(_summary(details, request), details=details)


class RemoveAction(Action):
    """Remove-Application: exactly the named packages, in one transaction (see the module
    docstring); one that is not installed is reported ``not-installed``."""

    name = "Remove-Application"

    def __init__(self, apt_handler: Any) -> None:
        self._apt = apt_handler  # agent.apt.handler.AptUpdateHandler

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        request = _package_request(step, self._apt.settings)
        return lambda run: self._run(run, request)

    def _run(self, run: StepRun, request: Any) -> StepOutcome:
        details = dict(self._apt.remove(request, run.job) or {})
        return StepOutcome(_summary(details, request), details=details)
