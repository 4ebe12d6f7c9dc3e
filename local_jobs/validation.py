"""The request rules of the local Jobs service, one set for every front end.

The service enforces them (``service.py``); the MQTT device API (``data_plane.py``), the
control plane (``control_plane.py``) and any other front end call the same functions to
turn their wire types into arguments, so a user sees the same message whichever door the
request came through. Every check raises ``InvalidRequestError`` naming the field; limits
are botocore's (``iot/2015-05-28`` and ``iot-jobs-data/2017-09-29`` service models).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from local_jobs.model import (
    DISCARD_STEP_TIMER,
    JOB_ID_PATTERN,
    MAX_IN_PROGRESS_TIMEOUT_MINUTES,
    MAX_JOB_DOCUMENT_CHARS,
    MAX_STATUS_DETAILS_VALUE_CHARS,
    MAX_STEP_TIMEOUT_MINUTES,
    MIN_STEP_TIMEOUT_MINUTES,
    STATUS_DETAILS_KEY_PATTERN,
    THING_NAME_PATTERN,
    ExecutionStatus,
    InvalidRequestError,
    RetryCriterion,
    RetryFailureType,
)

# botocore's JobDocumentSource, JobDescription, Comment, ReasonCode and RetryCriteriaList limits.
MAX_DOCUMENT_SOURCE_CHARS = 1350
MAX_DESCRIPTION_CHARS = 2028
MAX_COMMENT_CHARS = 2028
REASON_CODE_PATTERN = re.compile(r"[A-Z0-9_]{1,128}")
MAX_RETRY_CRITERIA = 2
MAX_RETRIES = 10
MAX_RETRIES_PER_EXECUTION = 10  # DG: up to 10 retries for both failure types combined
# The job id of DescribeJobExecution that names the thing's next pending execution.
NEXT = "$next"


def check_job_id(value: object, where: str = "jobId") -> str:
    """``value`` if it is a job id: 1-64 characters of ``[a-zA-Z0-9_-]``."""
    if not isinstance(value, str) or not JOB_ID_PATTERN.fullmatch(value):
        raise InvalidRequestError(
            f"{where} {value!r} is invalid: use 1 to 64 characters from a-z, A-Z, 0-9, _ and -"
        )
    return value


def check_thing_name(value: object, where: str = "thingName") -> str:
    """``value`` if it is a thing name: 1-128 characters of ``[a-zA-Z0-9:_-]``."""
    if not isinstance(value, str) or not THING_NAME_PATTERN.fullmatch(value):
        raise InvalidRequestError(
            f"{where} {value!r} is invalid: use 1 to 128 characters "
            f"from a-z, A-Z, 0-9, :, _ and -"
        )
    return value


def check_targets(targets: Sequence[str]) -> List[str]:
    """The thing names of a job's targets, each checked, duplicates dropped, order kept."""
    if isinstance(targets, str) or not targets:
        raise InvalidRequestError("targets must name at least one thing")
    things: List[str] = []
    for thing in targets:
        check_thing_name(thing, "targets: thing name")
        if thing not in things:
            things.append(thing)
    return things


def check_document(text: object, where: str = "document") -> str:
    """``text`` if it is a job document: JSON object text of at most 32768 characters.

    ``where`` names the source in the error (``document``, ``documentSource /x.json``).
    """
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where}: the job document must be JSON text")
    if len(text) > MAX_JOB_DOCUMENT_CHARS:
        raise InvalidRequestError(
            f"{where}: the job document is {len(text)} characters long; "
            f"the limit is {MAX_JOB_DOCUMENT_CHARS}"
        )
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"{where}: the job document is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError(
            f"{where}: the job document must be a JSON object, got {type(parsed).__name__}"
        )
    return text


def check_description(description: Optional[str]) -> Optional[str]:
    """A job description: None, or a string of at most 2028 characters."""
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS
    ):
        raise InvalidRequestError(
            f"description must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )
    return description


def check_in_progress_timeout(
    minutes: object, where: str = "timeoutConfig.inProgressTimeoutInMinutes"
) -> Optional[int]:
    """A job's in-progress timeout: None, or 1 to 10080 minutes."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise InvalidRequestError(f"{where} must be an integer, got {json.dumps(minutes)[:80]}")
    if not 1 <= minutes <= MAX_IN_PROGRESS_TIMEOUT_MINUTES:
        raise InvalidRequestError(
            f"{where} must be 1 to {MAX_IN_PROGRESS_TIMEOUT_MINUTES}, got {minutes}"
        )
    return minutes


def parse_retry_config(config: Mapping[str, Any]) -> List[RetryCriterion]:
    """``jobExecutionsRetryConfig`` as sent over HTTP: 1-2 criteria of failureType and
    numberOfRetries (0-10)."""
    where = "jobExecutionsRetryConfig.criteriaList"
    criteria = config.get("criteriaList")
    if not isinstance(criteria, list) or not 1 <= len(criteria) <= MAX_RETRY_CRITERIA:
        raise InvalidRequestError(f"{where} must be a list of 1 to {MAX_RETRY_CRITERIA} criteria")
    result = []
    for index, item in enumerate(criteria):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(
                f"{at} must be an object with failureType and numberOfRetries"
            )
        try:
            failure_type = RetryFailureType(item.get("failureType"))
        except ValueError:
            choices = ", ".join(t.value for t in RetryFailureType)
            raise InvalidRequestError(f"{at}.failureType must be one of {choices}") from None
        retries = item.get("numberOfRetries")
        if (
            not isinstance(retries, int)
            or isinstance(retries, bool)
            or not (0 <= retries <= MAX_RETRIES)
        ):
            raise InvalidRequestError(
                f"{at}.numberOfRetries must be an integer from 0 to {MAX_RETRIES}"
            )
        result.append(RetryCriterion(failure_type, retries))
    return result


def check_presigned_url_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``presignedUrlConfig``: ``roleArn`` (20-2048 characters) and ``expiresInSec`` (60-3600),
    both optional."""
    role = config.get("roleArn")
    if role is not None and (not isinstance(role, str) or not 20 <= len(role) <= 2048):
        raise InvalidRequestError("presignedUrlConfig.roleArn must be 20 to 2048 characters")
    expires = config.get("expiresInSec")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int) or not 60 <= expires <= 3600
    ):
        raise InvalidRequestError(
            f"presignedUrlConfig.expiresInSec must be 60 to 3600, got {json.dumps(expires)[:40]}"
        )
    return dict(config)


def check_retry_criteria(criteria: Sequence[RetryCriterion]) -> Tuple[RetryCriterion, ...]:
    """A job's retry criteria: at most 2, one per failure type, 0-10 retries, 10 in all."""
    criteria = tuple(criteria or ())
    if len(criteria) > MAX_RETRY_CRITERIA:
        raise InvalidRequestError(
            f"jobExecutionsRetryConfig.criteriaList holds at most {MAX_RETRY_CRITERIA} items"
        )
    seen = set()
    for criterion in criteria:
        if not isinstance(criterion, RetryCriterion):
            raise InvalidRequestError(f"invalid retry criterion {criterion!r}")
        if criterion.failure_type in seen:
            raise InvalidRequestError(
                f"failureType {criterion.failure_type.value} appears twice in criteriaList"
            )
        seen.add(criterion.failure_type)
        n = criterion.number_of_retries
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_RETRIES:
            raise InvalidRequestError(f"numberOfRetries must be 0-{MAX_RETRIES}, got {n!r}")
    if sum(c.number_of_retries for c in criteria) > MAX_RETRIES_PER_EXECUTION:
        raise InvalidRequestError(
            f"at most {MAX_RETRIES_PER_EXECUTION} retries for both failure types combined"
        )
    return criteria


def validate_status_details(details: object, where: str = "statusDetails") -> Dict[str, str]:
    """Check a statusDetails map; return it as a plain dict or raise InvalidRequestError.

    Keys match ``[a-zA-Z0-9:_-]{1,128}``; values are strings of 1..1024 characters without
    control characters. ``\\n`` and ``\\t`` are accepted although the documented pattern
    ``[^\\p{C}]+`` excludes them: the live service accepts them (the ADC README shows a
    ``stderr`` value ending in ``\\n``), jobs-api.md §1.8.
    """
    if not isinstance(details, Mapping):
        raise InvalidRequestError(f"{where} must be an object of string values")
    result: Dict[str, str] = {}
    for key, value in details.items():
        if not isinstance(key, str) or not STATUS_DETAILS_KEY_PATTERN.fullmatch(key):
            raise InvalidRequestError(
                f"{where} key {key!r} must be 1-128 characters of [a-zA-Z0-9:_-]"
            )
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"{where} value of {key!r} must be a string, got {type(value).__name__}"
            )
        if not 1 <= len(value) <= MAX_STATUS_DETAILS_VALUE_CHARS:
            raise InvalidRequestError(
                f"{where} value of {key!r} must be 1-{MAX_STATUS_DETAILS_VALUE_CHARS} characters,"
                f" got {len(value)}"
            )
        for ch in value:
            if ch not in "\n\t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0):
                raise InvalidRequestError(
                    f"{where} value of {key!r} holds control character {ch!r}"
                )
        result[key] = value
    return result


def validate_step_timeout(minutes: object) -> int:
    """1..10080 minutes, or -1 to discard the step timer; raise InvalidRequestError otherwise."""
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise InvalidRequestError(f"stepTimeoutInMinutes must be an integer, got {minutes!r}")
    if minutes != DISCARD_STEP_TIMER and not (
        MIN_STEP_TIMEOUT_MINUTES <= minutes <= MAX_STEP_TIMEOUT_MINUTES
    ):
        raise InvalidRequestError(
            f"stepTimeoutInMinutes must be {MIN_STEP_TIMEOUT_MINUTES}-{MAX_STEP_TIMEOUT_MINUTES}"
            f" or -1, got {minutes}"
        )
    return minutes


# Device requests (MQTT payloads and HTTPS bodies of the iot-jobs-data API).


def request_number(body: Mapping[str, Any], key: str) -> Optional[int]:
    """An integer given as a number or a decimal string (PY1 sends strings), or None."""
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if isinstance(value, bool):
        raise InvalidRequestError(f"{key} must be a number, got {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int):
        raise InvalidRequestError(f"{key} must be a number, got {value!r}")
    return value


def request_flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean request field; ``default`` when absent or null."""
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{key} must be true or false, got {value!r}")
    return value


def request_expected_version(body: Mapping[str, Any]) -> Optional[int]:
    """UpdateJobExecution's ``expectedVersion``: a non-negative integer, or None."""
    expected_version = request_number(body, "expectedVersion")
    if expected_version is not None and expected_version < 0:
        raise InvalidRequestError(f"expectedVersion must not be negative, got {expected_version}")
    return expected_version


def request_status(body: Mapping[str, Any]) -> ExecutionStatus:
    """UpdateJobExecution's ``status``, required on every update."""
    status_text = body.get("status")
    if status_text is None:
        raise InvalidRequestError("status is required")
    try:
        return ExecutionStatus(status_text)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"invalid status {status_text!r}") from None
