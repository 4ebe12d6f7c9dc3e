"""The control plane's fleet operations: thing registry, thing groups, job targets and
configurations (groups, CONTINUOUS, rollouts, aborts, namespaces), UpdateJob,
AssociateTargetsWithJob, DeleteJobExecution, tags and DescribeEndpoint.

``control_plane.py`` routes to the handlers in ``ROUTES`` and uses the request parsers and
shapes here for CreateJob, DescribeJob and ListJobs. Shapes and limits follow botocore's model
(``botocore/data/iot/2015-05-28/service-2.json``); errors carry AWS's codes and a message that
names the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from local_jobs.model import (
    DEFAULT_REGION,
    JOB_ID_PATTERN,
    MAX_IN_PROGRESS_TIMEOUT_MINUTES,
    THING_NAME_PATTERN,
    AbortCriterion,
    InvalidRequestError,
    Job,
    ResourceNotFoundError,
    RolloutConfig,
    TargetSelection,
    job_arn,
    thing_arn,
    thing_group_arn,
)
from local_jobs.paging import Pager
from local_jobs.registry import Registry, Thing, ThingGroup, check_attributes, check_tags

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
# DescribeEndpoint types the local service answers, and the endpoint each names.
ENDPOINT_TYPES = ("iot:Data-ATS", "iot:Data", "iot:Jobs")


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


def _without_none(values: Dict[str, Any]) -> Dict[str, Any]:
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


# --------------------------------------------------------------------------- operations


def _registry(ops: Any) -> Registry:
    registry = getattr(ops.service, "registry", None)
    if registry is None:
        raise _invalid("this Jobs service has no thing registry")
    return registry


def pager(ops: Any) -> Pager:
    """The control plane server's Pager (made on first use)."""
    found = getattr(ops.server, "fleet_pager", None)
    if found is None:
        found = ops.server.fleet_pager = Pager()
    return found


def _attribute_payload(body: Body, where: str) -> Tuple[Dict[str, str], bool]:
    payload = _object(body, "attributePayload", where)
    if payload is None:
        return {}, False
    attributes = check_attributes(
        payload.get("attributes", {}), f"{where}attributePayload.attributes"
    )
    merge = payload.get("merge", False)
    if not isinstance(merge, bool):
        raise _invalid(f"{where}attributePayload.merge must be true or false")
    return attributes, merge


def create_thing(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingName"], "thingName")
    for unsupported, what in (
        ("thingTypeName", "thing type"),
        ("billingGroupName", "billing group"),
    ):
        if body.get(unsupported) is not None:
            raise ResourceNotFoundError(
                f"{unsupported}: {what} {body[unsupported]!r} does not exist (the local Jobs "
                f"service has no {what}s)"
            )
    attributes, _ = _attribute_payload(body, "")
    with ops.service.operation():
        thing = _registry(ops).create_thing(name, attributes)
    return {"thingName": name, "thingArn": thing_arn(name, ops.region), "thingId": thing.thing_id}


def describe_thing(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingName"], "thingName")
    thing = _registry(ops).thing(name)
    return {"defaultClientId": name, **thing_shape(thing, ops.region), "thingId": thing.thing_id}


def update_thing(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingName"], "thingName")
    if body.get("thingTypeName") is not None:
        raise ResourceNotFoundError(
            f"thingTypeName: thing type {body['thingTypeName']!r} does not exist (the local "
            f"Jobs service has no thing types)"
        )
    attributes, merge = _attribute_payload(body, "")
    expected = body.get("expectedVersion")
    if expected is not None:
        expected = _int(expected, "expectedVersion", 1)
    with ops.service.operation():
        _registry(ops).update_thing(name, attributes, merge, expected)
    return {}


def list_things(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    if query.get("thingTypeName") is not None:
        things: List[Thing] = []  # no thing types locally: none has the type
    else:
        things = _registry(ops).list_things()
    attribute = query.get("attributeName")
    if attribute is not None:
        value = query.get("attributeValue")
        prefix = _query_flag(query, "usePrefixAttributeValue", False)
        things = [
            t
            for t in things
            if attribute in t.attributes
            and (
                value is None
                or (
                    t.attributes[attribute].startswith(value)
                    if prefix
                    else t.attributes[attribute] == value
                )
            )
        ]
    page, token = pager(ops).page(things, query, "ListThings")
    return _without_none({"things": [thing_shape(t, ops.region) for t in page], "nextToken": token})


def delete_thing(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingName"], "thingName")
    with ops.service.operation():
        _registry(ops).delete_thing(name, _query_int(query, "expectedVersion"))
    return {}


def create_thing_group(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingGroupName"], "thingGroupName")
    parent = body.get("parentGroupName")
    if parent is not None:
        name_of(parent, "parentGroupName")
    properties = _object(body, "thingGroupProperties") or {}
    text = properties.get("thingGroupDescription")
    if text is not None and (
        not isinstance(text, str) or len(text) > MAX_DESCRIPTION_CHARS or _CONTROL.search(text)
    ):
        raise _invalid(
            "thingGroupProperties.thingGroupDescription must be at most 2028 printable characters"
        )
    attributes, _ = _attribute_payload(properties, "thingGroupProperties.")
    tags = check_tags(body["tags"]) if body.get("tags") is not None else {}
    registry = _registry(ops)
    with ops.service.operation():
        group = registry.create_group(name, parent, text, attributes)
        if tags:
            registry.tag(thing_group_arn(name, ops.region), tags)
    return {
        "thingGroupName": name,
        "thingGroupArn": thing_group_arn(name, ops.region),
        "thingGroupId": group.group_id,
    }


def describe_thing_group(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingGroupName"], "thingGroupName")
    registry = _registry(ops)
    return group_shape(registry.group(name), registry, ops.region)


def list_thing_groups(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    registry = _registry(ops)
    groups = registry.list_groups()
    parent = query.get("parentGroup")
    if parent is not None:
        name_of(parent, "parentGroup")
        registry.group(parent)
        recursive = _query_flag(query, "recursive", False)
        below = registry.descendants(parent) if recursive else registry.children(parent)
        groups = [g for g in groups if g.name in below]
    prefix = query.get("namePrefixFilter")
    if prefix is not None:
        groups = [g for g in groups if g.name.startswith(prefix)]
    page, token = pager(ops).page(groups, query, "ListThingGroups")
    return _without_none(
        {
            "thingGroups": [
                {"groupName": g.name, "groupArn": thing_group_arn(g.name, ops.region)} for g in page
            ],
            "nextToken": token,
        }
    )


def delete_thing_group(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    name = name_of(params["thingGroupName"], "thingGroupName")
    registry = _registry(ops)
    with ops.service.operation():
        registry.delete_group(name, _query_int(query, "expectedVersion"))
        registry.forget_tags(thing_group_arn(name, ops.region))
    return {}


def _member_names(body: Body) -> Tuple[str, str]:
    """(group, thing) of AddThingToThingGroup / RemoveThingFromThingGroup: name or ARN."""
    group = body.get("thingGroupName")
    if group is None and body.get("thingGroupArn") is not None:
        kind, group = parse_arn(body["thingGroupArn"], "thingGroupArn")
        if kind != "thinggroup":
            raise _invalid(f"thingGroupArn {body['thingGroupArn']!r} is not a thing group ARN")
    thing = body.get("thingName")
    if thing is None and body.get("thingArn") is not None:
        kind, thing = parse_arn(body["thingArn"], "thingArn")
        if kind != "thing":
            raise _invalid(f"thingArn {body['thingArn']!r} is not a thing ARN")
    if group is None:
        raise _invalid("give thingGroupName or thingGroupArn")
    if thing is None:
        raise _invalid("give thingName or thingArn")
    return name_of(group, "thingGroupName"), name_of(thing, "thingName")


def add_thing_to_thing_group(
    ops: Any, params: Dict[str, str], query: Query, body: Body
) -> Response:
    group, thing = _member_names(body)
    _registry(ops)
    ops.service.add_thing_to_group(group, thing)
    return {}


def remove_thing_from_thing_group(
    ops: Any, params: Dict[str, str], query: Query, body: Body
) -> Response:
    group, thing = _member_names(body)
    _registry(ops)
    ops.service.remove_thing_from_group(group, thing)
    return {}


def list_things_in_thing_group(
    ops: Any, params: Dict[str, str], query: Query, body: Body
) -> Response:
    name = name_of(params["thingGroupName"], "thingGroupName")
    registry = _registry(ops)
    registry.group(name)
    things = registry.members(name, recursive=_query_flag(query, "recursive", False))
    page, token = pager(ops).page(things, query, f"ListThingsInThingGroup {name}")
    return _without_none({"things": page, "nextToken": token})


def list_thing_groups_for_thing(
    ops: Any, params: Dict[str, str], query: Query, body: Body
) -> Response:
    name = name_of(params["thingName"], "thingName")
    registry = _registry(ops)
    registry.thing(name)
    direct = [
        r[0]
        for r in registry.store.query(
            "SELECT group_name FROM group_members WHERE thing_name = ? ORDER BY seq", (name,)
        )
    ]
    page, token = pager(ops).page(direct, query, f"ListThingGroupsForThing {name}")
    return _without_none(
        {
            "thingGroups": [
                {"groupName": g, "groupArn": thing_group_arn(g, ops.region)} for g in page
            ],
            "nextToken": token,
        }
    )


def _job_id(value: str) -> str:
    if not JOB_ID_PATTERN.fullmatch(value):
        raise _invalid(
            f"jobId {value!r} is invalid: use 1 to 64 characters from a-z, A-Z, 0-9, _ and -"
        )
    return value


def _check_namespace_of(job: Job, query: Query) -> None:
    """AWS names a namespaced job with its namespaceId; the wrong one finds no job."""
    asked = namespace_id(query.get("namespaceId"))
    if asked is not None and asked != (job.namespace_id or None):
        raise ResourceNotFoundError(f"Job {job.job_id} does not exist in namespace {asked}")


def associate_targets_with_job(
    ops: Any, params: Dict[str, str], query: Query, body: Body
) -> Response:
    job_id = _job_id(params["jobId"])
    _check_namespace_of(ops.service.describe_job(job_id), query)
    things, groups = job_targets(body.get("targets"), _registry(ops), limit=MAX_TARGETS)
    comment = description(body, "comment")
    job = ops.service.associate_targets(job_id, things, groups, comment)
    return _without_none(
        {"jobArn": job_arn(job_id, ops.region), "jobId": job_id, "description": job.description}
    )


def update_job(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    job_id = _job_id(params["jobId"])
    job = ops.service.describe_job(job_id)
    _check_namespace_of(job, query)
    if body.get("presignedUrlConfig") is not None:
        raise _invalid(
            f"job {job_id}: presignedUrlConfig is not supported by the local Jobs service"
        )
    changes: Dict[str, Any] = {}
    if "description" in body:
        changes["description"] = description(body)
    if body.get("timeoutConfig") is not None:
        timeout = _object(body, "timeoutConfig") or {}
        minutes = timeout.get("inProgressTimeoutInMinutes")
        changes["in_progress_timeout_minutes"] = (
            None
            if minutes is None
            else _int(
                minutes,
                "timeoutConfig.inProgressTimeoutInMinutes",
                1,
                MAX_IN_PROGRESS_TIMEOUT_MINUTES,
            )
        )
    if body.get("jobExecutionsRetryConfig") is not None:
        from local_jobs.control_plane import _retry_criteria

        changes["retry_criteria"] = tuple(_retry_criteria(body))
    if body.get("jobExecutionsRolloutConfig") is not None:
        changes["rollout"] = rollout_config(body)
    if body.get("abortConfig") is not None:
        changes["abort_criteria"] = abort_config(body)
    ops.service.update_job(job_id, **changes)
    return {}


def delete_job_execution(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    job_id = _job_id(params["jobId"])
    thing = name_of(params["thingName"], "thingName")
    try:
        number = int(params["executionNumber"])
    except ValueError:
        raise _invalid(
            f"executionNumber must be an integer, got {params['executionNumber']!r}"
        ) from None
    _check_namespace_of(ops.service.describe_job(job_id), query)
    ops.service.delete_job_execution(
        job_id, thing, number, force=_query_flag(query, "force", False)
    )
    return {}


def _resource(ops: Any, arn: Any) -> str:
    """A taggable ARN of something that exists: a job, a thing group or a thing."""
    kind, name = parse_arn(arn, "resourceArn")
    if kind == "job":
        ops.service.describe_job(_job_id(name))
    elif kind == "thinggroup":
        _registry(ops).group(name)
    else:
        _registry(ops).thing(name)
    return arn


def tag_resource(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    arn = _resource(ops, body.get("resourceArn"))
    tags = check_tags(body.get("tags"))
    with ops.service.operation():
        _registry(ops).tag(arn, tags)
    return {}


def untag_resource(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    arn = _resource(ops, body.get("resourceArn"))
    keys = body.get("tagKeys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _invalid("tagKeys must be a list of tag keys")
    with ops.service.operation():
        _registry(ops).untag(arn, keys)
    return {}


def list_tags_for_resource(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    if "resourceArn" not in query:
        raise _invalid("resourceArn is required")
    arn = _resource(ops, query["resourceArn"])
    tags = [{"Key": k, "Value": v} for k, v in _registry(ops).tags(arn).items()]
    page, token = pager(ops).page(tags, query, "ListTagsForResource")
    return _without_none({"tags": page, "nextToken": token})


def describe_endpoint(ops: Any, params: Dict[str, str], query: Query, body: Body) -> Response:
    kind = query.get("endpointType", "iot:Data")
    endpoints = getattr(ops.server, "device_endpoints", None) or {}
    if kind not in ENDPOINT_TYPES:
        raise _invalid(
            f"endpointType {kind!r} is not served by the local Jobs service; it answers "
            f"{', '.join(ENDPOINT_TYPES)}"
        )
    address = endpoints.get(kind) or endpoints.get("iot:Data-ATS")
    if kind == "iot:Jobs" and "iot:Jobs" not in endpoints:
        raise _invalid(
            "endpointType 'iot:Jobs': this local Jobs service serves no HTTPS device API; "
            "use the MQTT endpoint (endpointType iot:Data-ATS)"
        )
    if not address:
        raise _invalid(f"endpointType {kind!r}: this control plane was started without one")
    return {"endpointAddress": address}


Handler = Callable[[Any, Dict[str, str], Query, Body], Response]

# (method, path pattern, operation name, handler), in control_plane.py's form.
ROUTES: List[Tuple[str, str, str, Handler]] = [
    ("GET", r"/things", "ListThings", list_things),
    ("POST", r"/things/(?P<thingName>{s})", "CreateThing", create_thing),
    ("GET", r"/things/(?P<thingName>{s})", "DescribeThing", describe_thing),
    ("PATCH", r"/things/(?P<thingName>{s})", "UpdateThing", update_thing),
    ("DELETE", r"/things/(?P<thingName>{s})", "DeleteThing", delete_thing),
    (
        "GET",
        r"/things/(?P<thingName>{s})/thing-groups",
        "ListThingGroupsForThing",
        list_thing_groups_for_thing,
    ),
    ("GET", r"/thing-groups", "ListThingGroups", list_thing_groups),
    (
        "PUT",
        r"/thing-groups/addThingToThingGroup",
        "AddThingToThingGroup",
        add_thing_to_thing_group,
    ),
    (
        "PUT",
        r"/thing-groups/removeThingFromThingGroup",
        "RemoveThingFromThingGroup",
        remove_thing_from_thing_group,
    ),
    ("POST", r"/thing-groups/(?P<thingGroupName>{s})", "CreateThingGroup", create_thing_group),
    ("GET", r"/thing-groups/(?P<thingGroupName>{s})", "DescribeThingGroup", describe_thing_group),
    ("DELETE", r"/thing-groups/(?P<thingGroupName>{s})", "DeleteThingGroup", delete_thing_group),
    (
        "GET",
        r"/thing-groups/(?P<thingGroupName>{s})/things",
        "ListThingsInThingGroup",
        list_things_in_thing_group,
    ),
    (
        "POST",
        r"/jobs/(?P<jobId>{s})/targets",
        "AssociateTargetsWithJob",
        associate_targets_with_job,
    ),
    ("PATCH", r"/jobs/(?P<jobId>{s})", "UpdateJob", update_job),
    (
        "DELETE",
        r"/things/(?P<thingName>{s})/jobs/(?P<jobId>{s})/executionNumber/(?P<executionNumber>{s})",
        "DeleteJobExecution",
        delete_job_execution,
    ),
    ("POST", r"/tags", "TagResource", tag_resource),
    ("POST", r"/untag", "UntagResource", untag_resource),
    ("GET", r"/tags", "ListTagsForResource", list_tags_for_resource),
    ("GET", r"/endpoint", "DescribeEndpoint", describe_endpoint),
]

__all__ = ["ROUTES", "DEFAULT_REGION", "create_job_options", "job_fleet_shape", "jobs_matching"]
