"""Check an APT_UPDATE job document and turn it into an ``AptRequest`` (pure: no I/O).

Document fields (unknown fields are ignored):

- ``aptPackageName`` (string) and optional ``aptPackageVersion`` (string, an exact version); or
- ``aptPackages``: a list of 1 to 32 items, each a package name string or an object
  ``{"name": ..., "version": ...}`` (version optional), installed in one transaction;
- ``allowDowngrade``, ``allowHeldChange``, ``dryRun`` (booleans, default false);
- ``refreshPackageLists``: true (always refresh), false (never), absent or null (refresh when
  the lists are older than ``[apt] lists_max_age_minutes``).

Every problem raises ``JobRejected`` with errorCode INVALID_DOCUMENT (or NOT_ALLOWED for the
operator's allow-list) and a reason naming the field. Names and versions are checked against
the Debian alphabets; they are only ever used as cache lookups in the worker, never as
command-line arguments or apt options.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.errors import JobRejected

INVALID_DOCUMENT = "INVALID_DOCUMENT"
NOT_ALLOWED = "NOT_ALLOWED"

MAX_PACKAGES = 32
MAX_NAME_CHARS = 128
MAX_VERSION_CHARS = 128
# Debian policy 5.6.1 (at least two characters, lower case), plus an optional :arch qualifier.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?", re.ASCII)
# Debian policy 5.6.12: [epoch:]upstream[-revision] from this alphabet, starting alphanumeric.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:-]*", re.ASCII)
FLAGS = (
    ("allowDowngrade", "allow_downgrade"),
    ("allowHeldChange", "allow_held_change"),
    ("dryRun", "dry_run"),
)


@dataclass(frozen=True)
class PackageRequest:
    """One requested package: a checked name and, when pinned, an exact version."""

    name: str
    version: Optional[str] = None

    @property
    def bare_name(self) -> str:
        """The name without its ``:arch`` qualifier."""
        return self.name.split(":", 1)[0]


@dataclass(frozen=True)
class AptRequest:
    """A checked APT_UPDATE request: what the worker is asked to do."""

    packages: Tuple[PackageRequest, ...]
    allow_downgrade: bool = False
    allow_held_change: bool = False
    refresh_lists: Optional[bool] = None
    dry_run: bool = False

    def to_json(self) -> Dict[str, Any]:
        """The request as a JSON-ready dict, in the document's own field names."""
        return {
            "aptPackages": [
                {"name": package.name, "version": package.version} for package in self.packages
            ],
            "allowDowngrade": self.allow_downgrade,
            "allowHeldChange": self.allow_held_change,
            "refreshPackageLists": self.refresh_lists,
            "dryRun": self.dry_run,
        }


def parse_document(document: Any, allowed_packages: Sequence[str]) -> AptRequest:
    """Check ``document`` and the operator's ``allowed_packages`` globs; return the request.

    Raises JobRejected (INVALID_DOCUMENT or NOT_ALLOWED) with a reason naming the field.
    """
    request = parse_request(document)
    check_allowed(request, allowed_packages)
    return request


def parse_request(document: Any) -> AptRequest:
    """Check ``document`` alone (no allow-list); return the request. Raises JobRejected."""
    if not isinstance(document, Mapping):
        raise _invalid(f"the job document must be a JSON object, got {_type_name(document)}")
    single = "aptPackageName" in document and document["aptPackageName"] is not None
    listed = "aptPackages" in document and document["aptPackages"] is not None
    if single and listed:
        raise _invalid("the job document has both 'aptPackageName' and 'aptPackages'; use one")
    if listed:
        if document.get("aptPackageVersion") is not None:
            raise _invalid(
                "'aptPackageVersion' goes with 'aptPackageName'; in 'aptPackages' give each "
                "item its own 'version'"
            )
        packages = _package_list(document["aptPackages"])
    elif single:
        packages = (
            PackageRequest(
                _name(document["aptPackageName"], "aptPackageName"),
                _version(document.get("aptPackageVersion"), "aptPackageVersion"),
            ),
        )
    else:
        raise _invalid("the job document needs 'aptPackageName' (a package name) or 'aptPackages'")
    flags = {attribute: _flag(document, field) for field, attribute in FLAGS}
    refresh = document.get("refreshPackageLists")
    if refresh is not None and not isinstance(refresh, bool):
        raise _invalid(
            f"job document field 'refreshPackageLists' must be true, false or absent, "
            f"got {_type_name(refresh)}"
        )
    return AptRequest(packages=packages, refresh_lists=refresh, **flags)


def check_allowed(request: AptRequest, allowed_packages: Sequence[str]) -> None:
    """Raise JobRejected (NOT_ALLOWED) unless every requested name matches an allowed glob.

    A pattern without ``:`` matches the name without its ``:arch``; one with ``:`` matches the
    whole name.
    """
    if not allowed_packages:
        raise JobRejected(
            "no package may be installed by a job on this device: the setting "
            "[apt] allowed_packages is empty",
            NOT_ALLOWED,
        )
    for package in request.packages:
        if not is_allowed(package, allowed_packages):
            raise JobRejected(
                f"package {package.name!r} is not allowed by the setting [apt] allowed_packages "
                f"({', '.join(allowed_packages)})",
                NOT_ALLOWED,
                {"package": package.name},
            )


def is_allowed(package: PackageRequest, allowed_packages: Sequence[str]) -> bool:
    """True when ``package``'s name matches one of the ``allowed_packages`` globs."""
    for pattern in allowed_packages:
        subject = package.name if ":" in pattern else package.bare_name
        if fnmatch.fnmatchcase(subject, pattern):
            return True
    return False


def _package_list(value: Any) -> Tuple[PackageRequest, ...]:
    if not isinstance(value, list):
        raise _invalid(f"job document field 'aptPackages' must be a list, got {_type_name(value)}")
    if not value:
        raise _invalid("job document field 'aptPackages' is empty; name at least one package")
    if len(value) > MAX_PACKAGES:
        raise _invalid(
            f"job document field 'aptPackages' has {len(value)} items; at most {MAX_PACKAGES}"
        )
    packages: List[PackageRequest] = []
    seen = set()
    for index, item in enumerate(value):
        where = f"aptPackages[{index}]"
        if isinstance(item, str):
            package = PackageRequest(_name(item, where))
        elif isinstance(item, Mapping):
            if "name" not in item:
                raise _invalid(f"job document field '{where}' has no 'name'")
            package = PackageRequest(
                _name(item["name"], f"{where}.name"),
                _version(item.get("version"), f"{where}.version"),
            )
        else:
            raise _invalid(
                f"job document field '{where}' must be a package name or an object with "
                f"'name' and 'version', got {_type_name(item)}"
            )
        if package.name in seen:
            raise _invalid(
                f"job document field '{where}': package {package.name!r} is listed twice"
            )
        seen.add(package.name)
        packages.append(package)
    return tuple(packages)


def _name(value: Any, field: str) -> str:
    return _checked_text(
        value,
        field,
        "a package name",
        MAX_NAME_CHARS,
        NAME_PATTERN,
        "a Debian package name (2 or more of a-z 0-9 + . -, starting with a letter or digit, "
        "optional :arch)",
    )


def _version(value: Any, field: str) -> Optional[str]:
    if value is None:
        return None
    return _checked_text(
        value,
        field,
        "a version",
        MAX_VERSION_CHARS,
        VERSION_PATTERN,
        "a Debian version (A-Z a-z 0-9 . + ~ : -, starting with a letter or digit)",
    )


def _checked_text(
    value: Any, field: str, what: str, limit: int, pattern: re.Pattern, rule: str
) -> str:
    if not isinstance(value, str):
        raise _invalid(f"job document field '{field}' must be a string, got {_type_name(value)}")
    if len(value) > limit:
        raise _invalid(
            f"job document field '{field}' is {len(value)} characters long; "
            f"{what} has at most {limit}"
        )
    if not pattern.fullmatch(value):
        raise _invalid(f"job document field '{field}': {_show(value)} is not {rule}")
    return value


def _flag(document: Mapping, field: str) -> bool:
    value = document.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(
            f"job document field '{field}' must be true or false, got {_type_name(value)}"
        )
    return value


def _invalid(reason: str) -> JobRejected:
    return JobRejected(reason, INVALID_DOCUMENT)


def _show(value: str, limit: int = 40) -> str:
    """``repr`` of a value from a document, shortened: it goes into a status reason."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _type_name(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
