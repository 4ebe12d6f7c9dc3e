"""Job templates: AWS's managed templates, custom templates, and ``${aws:iot:parameter:...}``.

- ``MANAGED_TEMPLATES``: the AWS managed templates this agent runs (``agent/managed/``), with
  the job documents AWS publishes for them (jobs-api.md §2.2; DG:job-templates-managed):
  version 1.0, environment LINUX, ARN ``arn:aws:iot:REGION::jobtemplate/NAME:1.0``.
- ``fill_parameters``: the job document CreateJob makes from a managed template and its
  ``documentParameters``, with AWS's refusals of a missing required or an unknown parameter.
- ``TemplateStore``: custom templates (CreateJobTemplate ...) and which template each job was
  made from, in SQLite beside the jobs, so both survive a restart.

No HTTP here: ``template_api.py`` turns requests into these calls.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from local_jobs.model import ACCOUNT_ID, InvalidRequestError, ResourceNotFoundError, ServiceError

MANAGED_VERSION = "1.0"
ENVIRONMENTS = ("LINUX",)
PLACEHOLDER = re.compile(r"\$\{aws:iot:parameter:([^}]*)\}")
# botocore ParameterKey / ParameterValue.
PARAMETER_KEY = re.compile(r"[a-zA-Z0-9_-]{1,128}")
MAX_PARAMETER_VALUE_CHARS = 30720
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MANAGED_ARN = re.compile(
    r"arn:aws[a-z-]*:iot:(?P<region>[a-z0-9-]+)::jobtemplate/(?P<name>[^:/]+)(?::(?P<version>.+))?"
)
_CUSTOM_ARN = re.compile(
    r"arn:aws[a-z-]*:iot:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):jobtemplate/(?P<id>.+)"
)


class ConflictError(ServiceError):
    """A job template with that id exists already (CreateJobTemplate's ConflictException)."""

    http_status = 409
    aws_type = "ConflictException"


@dataclass(frozen=True)
class Parameter:
    """One ``documentParameters`` entry of a managed template (DescribeManagedJobTemplate)."""

    key: str
    description: str
    regex: str
    example: str
    optional: bool = False

    def shape(self) -> Dict[str, Any]:
        return {
            "key": self.key,
            "description": self.description,
            "regex": self.regex,
            "example": self.example,
            "optional": self.optional,
        }


@dataclass(frozen=True)
class ManagedTemplate:
    """An AWS managed job template: name, description, document and its parameters."""

    name: str
    description: str
    document: str
    parameters: Tuple[Parameter, ...]
    version: str = MANAGED_VERSION

    def arn(self, region: str) -> str:
        return f"arn:aws:iot:{region}::jobtemplate/{self.name}:{self.version}"


# runAsUser and pathToHandler: regexes as AWS publishes them (jobs-api.md §2.2).
_RUN_AS_USER = Parameter(
    "runAsUser",
    "Optional. The user the handler runs as; if not specified, the device client's own user.",
    "(.){0,256}",
    "user1",
    optional=True,
)
_PATH_TO_HANDLER = Parameter(
    "pathToHandler",
    "Optional. The folder of the handler; if not specified, the device client's working "
    "directory.",
    "(.){0,4096}",
    "/home/user1/jobs-handler",
    optional=True,
)
_PACKAGES = Parameter(
    "packages",
    "A space-separated list of the packages to act on.",
    "(.){1,1024}",
    "nginx curl",
)
_SERVICES = Parameter(
    "services",
    "A space-separated list of the services to act on.",
    "(.){1,1024}",
    "nginx ssh",
)


def _document(action_name: str, action_type: str, action_input: Dict[str, Any]) -> str:
    action = {
        "name": action_name,
        "type": action_type,
        "input": action_input,
        "runAsUser": "${aws:iot:parameter:runAsUser}",
    }
    return json.dumps({"version": "1.0", "steps": [{"action": action}]}, separators=(",", ":"))


def _handler(
    name: str, handler: str, args: Sequence[str], parameters: Sequence[Parameter], text: str
) -> ManagedTemplate:
    action_input: Dict[str, Any] = {"handler": handler}
    if args:
        action_input["args"] = list(args)
    action_input["path"] = "${aws:iot:parameter:pathToHandler}"
    return ManagedTemplate(
        f"AWS-{name}",
        text,
        _document(name, "runHandler", action_input),
        (*parameters, _RUN_AS_USER, _PATH_TO_HANDLER),
    )


def _parameter_ref(key: str) -> str:
    return "${aws:iot:parameter:" + key + "}"


_ALL_MANAGED = (
    _handler(
        "Download-File",
        "download-file.sh",
        [_parameter_ref("downloadUrl"), _parameter_ref("filePath")],
        [
            Parameter(
                "downloadUrl",
                "The URL of the file to download: an internet resource, or a public or "
                "presigned Amazon S3 URL.",
                "(.){1,1024}",
                "https://example.com/index.html",
            ),
            Parameter(
                "filePath",
                "The local path on the device where the downloaded file is stored.",
                "(.){1,4096}",
                "path/to/file",
            ),
        ],
        "Downloads a file to the device.",
    ),
    _handler(
        "Install-Application", "install-packages.sh", [_parameter_ref("packages")],
        [_PACKAGES], "Installs one or more applications on the device.",
    ),
    _handler("Reboot", "reboot.sh", [], [], "Reboots the device."),
    _handler(
        "Remove-Application", "remove-packages.sh", [_parameter_ref("packages")],
        [_PACKAGES], "Uninstalls one or more applications from the device.",
    ),
    _handler(
        "Restart-Application", "restart-services.sh", [_parameter_ref("services")],
        [_SERVICES], "Stops and restarts one or more services on the device.",
    ),
    ManagedTemplate(
        "AWS-Run-Command",
        "Runs a command on the device.",
        _document("Run-Command", "runCommand", {"command": _parameter_ref("command")}),
        (
            Parameter(
                "command",
                "A comma-separated command and its arguments; a comma inside the command "
                "itself must be escaped.",
                "(.){1,4096}",
                "ls,-l,/tmp",
            ),
            _RUN_AS_USER,
        ),
    ),
    _handler(
        "Start-Application", "start-services.sh", [_parameter_ref("services")],
        [_SERVICES], "Starts one or more services on the device.",
    ),
    _handler(
        "Stop-Application", "stop-services.sh", [_parameter_ref("services")],
        [_SERVICES], "Stops one or more services on the device.",
    ),
)
MANAGED_TEMPLATES: Dict[str, ManagedTemplate] = {t.name: t for t in _ALL_MANAGED}


def managed_template(name: str, version: Optional[str] = None) -> ManagedTemplate:
    """The managed template ``name`` (at ``version``); ResourceNotFoundError otherwise."""
    template = MANAGED_TEMPLATES.get(name)
    if template is None:
        raise ResourceNotFoundError(
            f"Managed job template {name} does not exist; the local Jobs service has "
            f"{', '.join(MANAGED_TEMPLATES)}"
        )
    if version is not None and version != template.version:
        raise ResourceNotFoundError(
            f"Managed job template {name} has no version {version}; it has {template.version}"
        )
    return template


def parse_template_arn(arn: str) -> Tuple[str, str, Optional[str]]:
    """``("managed", name, version)`` or ``("custom", template id, None)`` for a template ARN.

    Raises InvalidRequestError naming ``jobTemplateArn`` otherwise.
    """
    match = _MANAGED_ARN.fullmatch(arn)
    if match:
        return "managed", match.group("name"), match.group("version")
    match = _CUSTOM_ARN.fullmatch(arn)
    if match:
        return "custom", match.group("id"), None
    raise InvalidRequestError(
        f"jobTemplateArn {arn!r} is not a job template ARN: expected "
        f"arn:aws:iot:REGION::jobtemplate/AWS-NAME:VERSION (managed) or "
        f"arn:aws:iot:REGION:{ACCOUNT_ID}:jobtemplate/TEMPLATE_ID (custom)"
    )


def check_document_parameters(parameters: object) -> Dict[str, str]:
    """``documentParameters`` as a map of botocore-valid keys to values."""
    if not isinstance(parameters, Mapping):
        raise InvalidRequestError("documentParameters must be a map of names to strings")
    result: Dict[str, str] = {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not PARAMETER_KEY.fullmatch(key):
            raise InvalidRequestError(
                f"documentParameters: the name {key!r} must be 1 to 128 characters from "
                f"a-z, A-Z, 0-9, _ and -"
            )
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= MAX_PARAMETER_VALUE_CHARS
            or _CONTROL_CHARACTERS.search(value)
        ):
            raise InvalidRequestError(
                f"documentParameters.{key} must be a string of 1 to "
                f"{MAX_PARAMETER_VALUE_CHARS} characters without control characters"
            )
        result[key] = value
    return result


def fill_parameters(template: ManagedTemplate, parameters: Mapping[str, str]) -> str:
    """The job document of ``template`` with every ``${aws:iot:parameter:NAME}`` replaced.

    Optional parameters left out become empty strings. Raises InvalidRequestError for an
    unknown parameter, a missing required one, or a value its regex refuses, naming it.
    """
    known = {p.key: p for p in template.parameters}
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise InvalidRequestError(
            f"documentParameters: {', '.join(unknown)} is not a parameter of "
            f"{template.name}:{template.version}; its parameters are {', '.join(known)}"
        )
    missing = [p.key for p in template.parameters if not p.optional and p.key not in parameters]
    if missing:
        raise InvalidRequestError(
            f"documentParameters: {template.name}:{template.version} needs "
            f"{', '.join(missing)} (e.g. --document-parameters "
            f"{','.join(f'{k}={known[k].example}' for k in missing)})"
        )
    values = {p.key: "" for p in template.parameters if p.optional}
    for key, value in parameters.items():
        if not re.fullmatch(known[key].regex, value, re.DOTALL):
            raise InvalidRequestError(
                f"documentParameters.{key} does not match {known[key].regex!r}"
            )
        values[key] = value

    def fill(item: Any) -> Any:
        if isinstance(item, str):
            return PLACEHOLDER.sub(lambda found: values[found.group(1)], item)
        if isinstance(item, dict):
            return {k: fill(v) for k, v in item.items()}
        if isinstance(item, list):
            return [fill(v) for v in item]
        return item

    return json.dumps(fill(json.loads(template.document)))


def managed_summary_shape(template: ManagedTemplate, region: str) -> Dict[str, Any]:
    """A ``ManagedJobTemplateSummary`` as ListManagedJobTemplates carries it."""
    return {
        "templateArn": template.arn(region),
        "templateName": template.name,
        "description": template.description,
        "environments": list(ENVIRONMENTS),
        "templateVersion": template.version,
    }


def managed_shape(template: ManagedTemplate, region: str) -> Dict[str, Any]:
    """DescribeManagedJobTemplate's response."""
    return {
        **managed_summary_shape(template, region),
        "documentParameters": [p.shape() for p in template.parameters],
        "document": template.document,
    }


def custom_template_arn(template_id: str, region: str) -> str:
    """The ARN AWS IoT gives a custom job template."""
    return f"arn:aws:iot:{region}:{ACCOUNT_ID}:jobtemplate/{template_id}"


@dataclass(frozen=True)
class CustomTemplate:
    """A stored custom job template: its id, creation time and CreateJobTemplate fields."""

    template_id: str
    created_at: float
    fields: Dict[str, Any]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_templates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    fields TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_extras (
    job_id TEXT PRIMARY KEY,
    template_arn TEXT,
    document_parameters TEXT,
    presigned_url_config TEXT
);
"""


class TemplateStore:
    """Custom job templates and the template each job came from, in one SQLite file.

    Its own connection to the service's database file (WAL), or ``":memory:"``.
    """

    def __init__(self, path: Union[str, Path] = ":memory:"):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, template: CustomTemplate) -> None:
        """Store ``template``; ConflictError when its id is taken."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO job_templates (template_id, created_at, fields) VALUES (?, ?, ?)",
                    (template.template_id, template.created_at, json.dumps(template.fields)),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"Job template {template.template_id} already exists."
                ) from None

    def get(self, template_id: str) -> Optional[CustomTemplate]:
        with self._lock:
            row = self._db.execute(
                "SELECT template_id, created_at, fields FROM job_templates WHERE template_id = ?",
                (template_id,),
            ).fetchone()
        return None if row is None else CustomTemplate(row[0], row[1], json.loads(row[2]))

    def list(self) -> List[CustomTemplate]:
        """Every custom template, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT template_id, created_at, fields FROM job_templates ORDER BY seq"
            ).fetchall()
        return [CustomTemplate(r[0], r[1], json.loads(r[2])) for r in rows]

    def delete(self, template_id: str) -> bool:
        """Forget the template; False when there was none."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM job_templates WHERE template_id = ?", (template_id,)
            )
        return cursor.rowcount > 0

    def remember_job(
        self,
        job_id: str,
        template_arn: Optional[str],
        parameters: Optional[Mapping[str, str]],
        presigned_url_config: Optional[Mapping[str, Any]],
    ) -> None:
        """Keep what DescribeJob shows beyond the service's job: the template it came from,
        its documentParameters, its presignedUrlConfig. Nothing to keep: nothing stored."""
        if not (template_arn or parameters or presigned_url_config):
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO job_extras VALUES (?, ?, ?, ?)",
                (
                    job_id,
                    template_arn,
                    json.dumps(dict(parameters)) if parameters else None,
                    json.dumps(dict(presigned_url_config)) if presigned_url_config else None,
                ),
            )

    def job_extras(self, job_id: str) -> Dict[str, Any]:
        """``jobTemplateArn``, ``documentParameters`` and ``presignedUrlConfig`` of a job, when
        it has them (DescribeJob's names)."""
        with self._lock:
            row = self._db.execute(
                "SELECT template_arn, document_parameters, presigned_url_config FROM job_extras "
                "WHERE job_id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            return {}
        extras: Dict[str, Any] = {}
        if row[0]:
            extras["jobTemplateArn"] = row[0]
        if row[1]:
            extras["documentParameters"] = json.loads(row[1])
        if row[2]:
            extras["presignedUrlConfig"] = json.loads(row[2])
        return extras

    def forget_job(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM job_extras WHERE job_id = ?", (job_id,))
