"""The control plane's fleet operations: thing registry, thing groups, AssociateTargetsWithJob,
UpdateJob, DeleteJobExecution, tags and DescribeEndpoint.

``control_plane.py`` routes to the handlers in ``ROUTES``; request fields and shapes are in
``job_options.py``. Errors carry AWS's codes and a message that names the field.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from local_jobs.job_options import (
    _CONTROL,
    MAX_DESCRIPTION_CHARS,
    MAX_TARGETS,
    Body,
    Query,
    Response,
    _int,
    _invalid,
    _object,
    _query_flag,
    _query_int,
    _without_none,
    abort_config,
    description,
    group_shape,
    job_targets,
    name_of,
    namespace_id,
    parse_arn,
    rollout_config,
    thing_shape,
)
from local_jobs.model import (
    JOB_ID_PATTERN,
    MAX_IN_PROGRESS_TIMEOUT_MINUTES,
    Job,
    ResourceNotFoundError,
    job_arn,
    thing_arn,
    thing_group_arn,
)
from local_jobs.paging import Pager
from local_jobs.registry import Registry, Thing, check_attributes, check_tags

# DescribeEndpoint types the local service answers, and the endpoint each names.
ENDPOINT_TYPES = ("iot:Data-ATS", "iot:Data", "iot:Jobs")


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

__all__ = ["ROUTES", "ENDPOINT_TYPES", "pager"]
