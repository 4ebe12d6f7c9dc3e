"""Request fields and response shapes of the fleet side of the control plane: job targets
(things and thing groups), targetSelection, namespaceId, jobExecutionsRolloutConfig and
abortConfig for CreateJob/UpdateJob, the Job fields they add, ListJobs' filters, and the
thing and thing group shapes. Pure: no I/O beyond registry look-ups.

Limits follow botocore's model (``botocore/data/iot/2015-05-28/service-2.json``); a bad value
is an ``InvalidRequestError`` whose message names the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from local_jobs.model import (
    THING_NAME_PATTERN,
    AbortCriterion,
    InvalidRequestError,
    Job,
    ResourceNotFoundError,
    RolloutConfig,
    TargetSelection,
    thing_arn,
    thing_group_arn,
)
from local_jobs.registry import Registry, Thing, ThingGroup

Body = Dict[str, Any]
Query = Dict[str, str]
Response = Optional[Dict[str, Any]]

ARN_PATTERN = re.compile(
    r"arn:aws[a-z-]*:iot:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"(?P<kind>thing|thinggroup|job)/(?P<name>.+)"
)
GROUP_NAME_PATTERN = THING_NAME_PATTERN
NAMESPACE_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")
MAX_TARGETS = 100  # AssociateTargetsWithJob: "must not exceed 100"
MAX_DESCRIPTION_CHARS = 2028
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


# --------------------------------------------------------------------------- request fields


def name_of(value: Any, field: str, pattern: re.Pattern[str] = THING_NAME_PATTERN) -> str:
    """A thing or thing group name, checked against botocore's pattern."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(
            f"{field} {value!r} is invalid: use 1 to 128 characters from a-z, A-Z, 0-9, :, _ and -"
        )
    return value


def _int(value: Any, field: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{field} must be an integer, got {json.dumps(value)[:80]}")
    if value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise _invalid(f"{field} must be {bound}, got {value}")
    return value


def _number(value: Any, field: str, low: float, high: float, decimals: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"{field} must be a number, got {json.dumps(value)[:80]}")
    if not low <= value <= high:
        raise _invalid(f"{field} must be {low} to {high}, got {value}")
    if round(value, decimals) != value:
        raise _invalid(f"{field} supports {decimals} digit(s) after the decimal, got {value}")
    return float(value)


def _object(body: Body, name: str, where: str = "") -> Optional[Dict[str, Any]]:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{where}{name} must be an object")
    return value


def _query_int(query: Query, name: str) -> Optional[int]:
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise _invalid(f"{name} must be an integer, got {query[name]!r}") from None


def _query_flag(query: Query, name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise _invalid(f"{name} must be true or false, got {value!r}")
    return value.lower() == "true"


def description(body: Body, name: str = "description") -> Optional[str]:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_DESCRIPTION_CHARS:
        raise _invalid(f"{name} must be 1 to {MAX_DESCRIPTION_CHARS} characters")
    if _CONTROL.search(value):
        raise _invalid(f"{name} must not hold control characters")
    return value


def namespace_id(value: Optional[str]) -> Optional[str]:
    """A namespaceId (``[a-zA-Z0-9_-]+``), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not NAMESPACE_PATTERN.fullmatch(value) or len(value) > 64:
        raise _invalid(f"namespaceId {value!r} is invalid: use a-z, A-Z, 0-9, _ and -")
    return value


def parse_arn(
    value: Any, field: str, expected: str = "a thing, thing group or job ARN"
) -> Tuple[str, str]:
    """(kind, name) of a thing, thing group or job ARN; InvalidRequestError otherwise."""
    match = ARN_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(
            f"{field}: {json.dumps(value)[:200]} is not {expected} "
            f"(arn:aws:iot:REGION:ACCOUNT:thing/NAME, .../thinggroup/NAME, .../job/ID)"
        )
    return match.group("kind"), match.group("name")


def job_targets(
    targets: Any, registry: Optional[Registry], field: str = "targets", limit: Optional[int] = None
) -> Tuple[List[str], List[str]]:
    """(thing names, group names) of a JobTargets list; each must exist in the registry.

    Raises InvalidRequestError for what is not a thing or thing group ARN and
    ResourceNotFoundError for a thing or group that is not registered.
    """
    if not isinstance(targets, list) or not targets:
        raise _invalid(f"{field} must be a non-empty list of thing or thing group ARNs")
    if limit is not None and len(targets) > limit:
        raise _invalid(f"{field} holds {len(targets)} targets; the limit is {limit}")
    things: List[str] = []
    groups: List[str] = []
    for target in targets:
        kind, name = parse_arn(target, field, "a thing or thing group ARN")
        if kind == "job":
            raise _invalid(f"{field}: {target!r} is a job ARN, not a thing or thing group ARN")
        name_of(name, f"{field}: name in {target!r}")
        if kind == "thing":
            if registry is not None and registry.get_thing(name) is None:
                raise ResourceNotFoundError(
                    f"{field}: thing {name} does not exist (register it with "
                    f"aws iot create-thing, or ./localjobs up --thing {name})"
                )
            if name not in things:
                things.append(name)
        else:
            if registry is not None and registry.get_group(name) is None:
                raise ResourceNotFoundError(
                    f"{field}: thing group {name} does not exist (aws iot create-thing-group)"
                )
            if name not in groups:
                groups.append(name)
    return things, groups


def rollout_config(body: Body) -> Optional[RolloutConfig]:
    """``jobExecutionsRolloutConfig`` as AWS checks it (maximumPerMinute 1-1000, base rate
    1-1000, incrementFactor 1.1-5 with one decimal, one increase criterion)."""
    where = "jobExecutionsRolloutConfig."
    config = _object(body, "jobExecutionsRolloutConfig")
    if config is None:
        return None
    maximum = config.get("maximumPerMinute")
    maximum = 1000 if maximum is None else _int(maximum, where + "maximumPerMinute", 1, 1000)
    rate = _object(config, "exponentialRate", where)
    if rate is None:
        return RolloutConfig(maximum_per_minute=maximum)
    at = where + "exponentialRate."
    base = _int(rate.get("baseRatePerMinute"), at + "baseRatePerMinute", 1, 1000)
    factor = _number(rate.get("incrementFactor"), at + "incrementFactor", 1.1, 5.0, 1)
    criteria = _object(rate, "rateIncreaseCriteria", at)
    if not criteria:
        raise _invalid(f"{at}rateIncreaseCriteria is required")
    notified = criteria.get("numberOfNotifiedThings")
    succeeded = criteria.get("numberOfSucceededThings")
    if (notified is None) == (succeeded is None):
        raise _invalid(
            f"{at}rateIncreaseCriteria: give one of numberOfNotifiedThings and "
            f"numberOfSucceededThings"
        )
    if notified is not None:
        notified = _int(notified, at + "rateIncreaseCriteria.numberOfNotifiedThings", 1)
    if succeeded is not None:
        succeeded = _int(succeeded, at + "rateIncreaseCriteria.numberOfSucceededThings", 1)
    return RolloutConfig(maximum, base, factor, notified, succeeded)


def abort_config(body: Body) -> Tuple[AbortCriterion, ...]:
    """``abortConfig.criteriaList`` as AWS checks it."""
    config = _object(body, "abortConfig")
    if config is None:
        return ()
    where = "abortConfig.criteriaList"
    criteria = config.get("criteriaList")
    if not isinstance(criteria, list) or not criteria:
        raise _invalid(f"{where} must be a non-empty list of criteria")
    result = []
    seen = set()
    for index, item in enumerate(criteria):
        at = f"{where}[{index}]."
        if not isinstance(item, dict):
            raise _invalid(f"{where}[{index}] must be an object")
        failure = item.get("failureType")
        if failure not in ("FAILED", "REJECTED", "TIMED_OUT", "ALL"):
            raise _invalid(f"{at}failureType must be FAILED, REJECTED, TIMED_OUT or ALL")
        if failure in seen:
            raise _invalid(f"{at}failureType {failure} appears twice")
        seen.add(failure)
        if item.get("action") != "CANCEL":
            raise _invalid(f"{at}action must be CANCEL, got {item.get('action')!r}")
        threshold = _number(item.get("thresholdPercentage"), at + "thresholdPercentage", 0, 100, 2)
        executed = _int(item.get("minNumberOfExecutedThings"), at + "minNumberOfExecutedThings", 1)
        result.append(AbortCriterion(failure, threshold, executed))
    return tuple(result)


def target_selection(body: Body) -> TargetSelection:
    value = body.get("targetSelection", "SNAPSHOT")
    try:
        return TargetSelection(value)
    except ValueError:
        raise _invalid(f"targetSelection must be SNAPSHOT or CONTINUOUS, got {value!r}") from None


def create_job_options(body: Body, registry: Optional[Registry]) -> Dict[str, Any]:
    """CreateJob's fleet arguments for ``JobsService.create_job`` (targets included)."""
    things, groups = job_targets(body.get("targets"), registry)
    options: Dict[str, Any] = {"targets": things}
    if groups:
        options["target_groups"] = groups
    selection = target_selection(body)
    if selection is TargetSelection.CONTINUOUS:
        options["target_selection"] = selection
    namespace = namespace_id(body.get("namespaceId"))
    if namespace is not None:
        options["namespace_id"] = namespace
    rollout = rollout_config(body)
    if rollout is not None:
        options["rollout"] = rollout
    abort = abort_config(body)
    if abort:
        options["abort_criteria"] = abort
    return options


# --------------------------------------------------------------------------- shapes


def _without_none(values: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def job_targets_shape(job: Job, region: str) -> List[str]:
    return [thing_arn(name, region) for name in job.targets] + [
        thing_group_arn(name, region) for name in job.target_groups
    ]


def job_fleet_shape(job: Job, rolling_out: bool, summary: bool = False) -> Dict[str, Any]:
    """The Job fields of selection, rollout, abort and namespace (DescribeJob; with
    ``summary`` only those a JobSummary has)."""
    shape: Dict[str, Any] = {
        "targetSelection": job.target_selection.value,
        "isConcurrent": rolling_out,
    }
    if summary:
        return shape
    if job.namespace_id:
        shape["namespaceId"] = job.namespace_id
    if job.rollout is not None:
        rollout: Dict[str, Any] = {"maximumPerMinute": job.rollout.maximum_per_minute}
        if job.rollout.base_rate_per_minute is not None:
            rollout["exponentialRate"] = {
                "baseRatePerMinute": job.rollout.base_rate_per_minute,
                "incrementFactor": job.rollout.increment_factor,
                "rateIncreaseCriteria": _without_none(
                    {
                        "numberOfNotifiedThings": job.rollout.notified_things,
                        "numberOfSucceededThings": job.rollout.succeeded_things,
                    }
                ),
            }
        shape["jobExecutionsRolloutConfig"] = rollout
    if job.abort_criteria:
        shape["abortConfig"] = {
            "criteriaList": [
                {
                    "failureType": c.failure_type,
                    "action": c.action,
                    "thresholdPercentage": c.threshold_percentage,
                    "minNumberOfExecutedThings": c.min_executed_things,
                }
                for c in job.abort_criteria
            ]
        }
    return shape


def jobs_matching(jobs: Sequence[Job], query: Query, registry: Optional[Registry]) -> List[Job]:
    """ListJobs' filters besides status: targetSelection, thingGroupName/Id, namespaceId."""
    selection = query.get("targetSelection")
    if selection is not None:
        selection = target_selection({"targetSelection": selection}).value
    group = query.get("thingGroupName")
    if group is not None:
        name_of(group, "thingGroupName")
        if registry is not None and registry.get_group(group) is None:
            raise ResourceNotFoundError(f"thingGroupName: thing group {group} does not exist")
    group_id = query.get("thingGroupId")
    if group_id is not None:
        found = registry.group_by_id(group_id) if registry is not None else None
        if found is None:
            raise ResourceNotFoundError(f"thingGroupId: no thing group has the id {group_id}")
        group = found.name if group is None or group == found.name else "\0"
    namespace = namespace_id(query.get("namespaceId"))
    return [
        job
        for job in jobs
        if (selection is None or job.target_selection.value == selection)
        and (group is None or group in job.target_groups)
        and (namespace is None or job.namespace_id == namespace)
    ]


def thing_shape(thing: Thing, region: str) -> Dict[str, Any]:
    return {
        "thingName": thing.name,
        "thingArn": thing_arn(thing.name, region),
        "attributes": dict(thing.attributes),
        "version": thing.version,
    }


def group_shape(group: ThingGroup, registry: Registry, region: str) -> Dict[str, Any]:
    ancestors = registry.ancestors(group.name)
    metadata: Dict[str, Any] = {"creationDate": group.created_at}
    if group.parent:
        metadata["parentGroupName"] = group.parent
        metadata["rootToParentThingGroups"] = [
            {"groupName": name, "groupArn": thing_group_arn(name, region)}
            for name in reversed(ancestors)
        ]
    properties: Dict[str, Any] = {"attributePayload": {"attributes": dict(group.attributes)}}
    if group.description is not None:
        properties["thingGroupDescription"] = group.description
    return {
        "thingGroupName": group.name,
        "thingGroupId": group.group_id,
        "thingGroupArn": thing_group_arn(group.name, region),
        "version": group.version,
        "thingGroupProperties": properties,
        "thingGroupMetadata": metadata,
    }
