"""Install-Application through the APT handler; Remove-Application (not yet supported).

The template's ``packages`` argument (one space-separated string) becomes an APT_UPDATE request
for those packages, so each name goes through the APT handler's checks: Debian name alphabet,
``[apt] allowed_packages``, and the worker's plan checks (nothing essential removed, nothing
outside the request changed). Names are only ever cache look-ups, never command-line words.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from agent.errors import JobRejected
from agent.managed.document import Step, words_of
from agent.managed.steps import Action, StepOutcome, StepRun


class InstallAction(Action):
    """Install-Application: the packages, at their candidate versions, in one transaction."""

    name = "Install-Application"

    def __init__(self, apt_handler: Any) -> None:
        self._apt = apt_handler  # agent.apt.handler.AptUpdateHandler

    def check(self, step: Step) -> Callable[[StepRun], StepOutcome]:
        from agent.apt.document import parse_document

        words = words_of(step.args)
        if not words:
            raise JobRejected(
                f"{step.label}: no packages given (args: one space-separated string of names)",
                "INVALID_DOCUMENT",
            )
        request: Dict[str, Any] = {"jobType": "APT_UPDATE", "aptPackages": list(words)}
        try:
            parse_document(request, self._apt.settings.allowed_packages)
        except JobRejected as error:
            raise JobRejected(f"{step.label}: packages: {error.reason}", error.code) from None
        return lambda run: self._run(run, request)

    def _run(self, run: StepRun, request: Dict[str, Any]) -> StepOutcome:
        details = dict(self._apt(request, run.job) or {})
        names = " ".join(request["aptPackages"])
        return StepOutcome(f"{details.get('result', 'done')}: {names}", details=details)
