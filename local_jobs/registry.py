"""The thing registry of the local Jobs service: things, thing groups, memberships and tags.

Kept in the service's SQLite file (``store.py``) in tables of its own, so it survives a
restart. Values in, values out; the rules that tie groups to jobs (CONTINUOUS targets) are
the service's (``service.py``), the HTTP shapes the control plane's (``fleet_api.py``).

Things that have a certificate in the service's certificate folder (``./localjobs up
--thing``, ``LocalStack.add_thing``) are registered on first sight: like a thing with a
principal attached on AWS, they cannot be deleted.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from local_jobs.model import (
    InvalidRequestError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    VersionConflictError,
)
from local_jobs.store import Store

# botocore: AttributeName / AttributeValue, TagKey / TagValue, ThingGroupDescription.
ATTRIBUTE_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.,@/:#-]{1,128}")
ATTRIBUTE_VALUE_PATTERN = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}")
MAX_THING_ATTRIBUTES = 50  # DG: a thing has up to 50 attributes (3 without a thing type)
TAG_KEY_PATTERN = re.compile(r"[\w\s.:/=+\-@]{1,128}")
MAX_TAG_VALUE_CHARS = 256
MAX_TAGS = 50
MAX_GROUP_DEPTH = 7  # DG: a hierarchy of at most 7 levels

SCHEMA = """
CREATE TABLE IF NOT EXISTS things (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    thing_id TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS thing_groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    group_id TEXT NOT NULL,
    description TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    parent TEXT,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    thing_name TEXT NOT NULL,
    UNIQUE (group_name, thing_name)
);
CREATE INDEX IF NOT EXISTS group_members_by_thing ON group_members (thing_name);
CREATE TABLE IF NOT EXISTS tags (
    resource_arn TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_arn, key)
);
"""


@dataclass(frozen=True)
class Thing:
    """A registered thing."""

    name: str
    thing_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    version: int = 1
    created_at: float = 0.0


@dataclass(frozen=True)
class ThingGroup:
    """A static thing group; ``parent`` is the parent group's name."""

    name: str
    group_id: str
    description: Optional[str] = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    parent: Optional[str] = None
    version: int = 1
    created_at: float = 0.0


def check_attributes(attributes: object, where: str) -> Dict[str, str]:
    """An attribute map (name -> value) checked against botocore's patterns."""
    if not isinstance(attributes, dict):
        raise InvalidRequestError(f"{where} must be an object of string values")
    if len(attributes) > MAX_THING_ATTRIBUTES:
        raise InvalidRequestError(
            f"{where} holds {len(attributes)} attributes; the limit is {MAX_THING_ATTRIBUTES}"
        )
    for name, value in attributes.items():
        if not ATTRIBUTE_NAME_PATTERN.fullmatch(name):
            raise InvalidRequestError(
                f"{where}: attribute name {name!r} must be 1 to 128 characters of "
                f"a-z, A-Z, 0-9 and _.,@/:#-"
            )
        if not isinstance(value, str) or not ATTRIBUTE_VALUE_PATTERN.fullmatch(value):
            raise InvalidRequestError(
                f"{where}: value of attribute {name!r} must be a string of at most 800 "
                f"characters of a-z, A-Z, 0-9 and _.,@/:#=[]-"
            )
    return dict(attributes)


def check_tags(tags: object, where: str = "tags") -> Dict[str, str]:
    """A TagList (``[{"Key": ..., "Value": ...}]``) as a dict, checked like AWS."""
    if not isinstance(tags, list):
        raise InvalidRequestError(f"{where} must be a list of {{Key, Value}} objects")
    result: Dict[str, str] = {}
    for index, tag in enumerate(tags):
        at = f"{where}[{index}]"
        if not isinstance(tag, dict):
            raise InvalidRequestError(f"{at} must be an object with Key and Value")
        key, value = tag.get("Key"), tag.get("Value", "")
        if not isinstance(key, str) or not TAG_KEY_PATTERN.fullmatch(key):
            raise InvalidRequestError(f"{at}.Key must be 1 to 128 characters, got {key!r}")
        if key.startswith("aws:"):
            raise InvalidRequestError(f"{at}.Key {key!r}: the aws: prefix is reserved")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidRequestError(f"{at}.Value must be a string of at most 256 characters")
        result[key] = value
    return result


class Registry:
    """Things, thing groups, memberships and tags in the service's SQLite file.

    ``certificate_things`` returns the names of things with certificates; they are
    registered when first looked up. Call under the service lock when a change must be
    seen together with the job changes it causes.
    """

    def __init__(
        self,
        store: Store,
        certificate_things: Callable[[], Sequence[str]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._certificate_things = certificate_things
        self._clock = clock
        store.executescript(SCHEMA)

    # things

    def register_certificate_things(self) -> None:
        """Register every thing with a certificate that is not registered yet."""
        for name in self._certificate_things():
            if self._thing_row(name) is None:
                self._insert_thing(name, {})

    def has_certificate(self, name: str) -> bool:
        return name in self._certificate_things()

    def create_thing(self, name: str, attributes: Mapping[str, str]) -> Thing:
        """Register a thing; the same name with the same attributes returns it again.

        Raises ResourceAlreadyExistsError when it exists with other attributes.
        """
        thing = self.get_thing(name)
        if thing is not None:
            if dict(thing.attributes) != dict(attributes):
                raise ResourceAlreadyExistsError(
                    f"Thing {name} already exists in account with different attributes"
                )
            return thing
        return self._insert_thing(name, dict(attributes))

    def _insert_thing(self, name: str, attributes: Dict[str, str]) -> Thing:
        thing = Thing(name, str(uuid.uuid4()), attributes, 1, self._clock())
        self.store.execute(
            "INSERT OR IGNORE INTO things (name, thing_id, attributes, version, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, thing.thing_id, json.dumps(attributes), 1, thing.created_at),
        )
        return thing

    def _thing_row(self, name: str) -> Optional[Thing]:
        rows = self.store.query(
            "SELECT name, thing_id, attributes, version, created_at FROM things WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        row = rows[0]
        return Thing(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def get_thing(self, name: str) -> Optional[Thing]:
        """The thing, registering it first when it has a certificate; None if unknown."""
        thing = self._thing_row(name)
        if thing is None and self.has_certificate(name):
            thing = self._insert_thing(name, {})
        return thing

    def thing(self, name: str) -> Thing:
        """Raises ResourceNotFoundError naming the thing."""
        thing = self.get_thing(name)
        if thing is None:
            raise ResourceNotFoundError(f"Thing {name} cannot be found.")
        return thing

    def update_thing(
        self,
        name: str,
        attributes: Mapping[str, str],
        merge: bool,
        expected_version: Optional[int],
    ) -> Thing:
        thing = self.thing(name)
        if expected_version is not None and expected_version != thing.version:
            raise VersionConflictError(
                f"Thing {name} is at version {thing.version}, not {expected_version}"
            )
        new = dict(thing.attributes) if merge else {}
        for key, value in attributes.items():
            if merge and value == "":
                new.pop(key, None)  # merge with an empty value removes the attribute
            else:
                new[key] = value
        self.store.execute(
            "UPDATE things SET attributes = ?, version = version + 1 WHERE name = ?",
            (json.dumps(new), name),
        )
        return self.thing(name)

    def list_things(self) -> List[Thing]:
        self.register_certificate_things()
        rows = self.store.query(
            "SELECT name, thing_id, attributes, version, created_at FROM things ORDER BY name"
        )
        return [Thing(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def delete_thing(self, name: str, expected_version: Optional[int]) -> None:
        """Forget a thing and its memberships; an unknown name is no error (as on AWS).

        Raises InvalidRequestError for a thing with a certificate (AWS refuses to delete a
        thing with an attached principal) and VersionConflictError.
        """
        thing = self.get_thing(name)
        if thing is None:
            return
        if self.has_certificate(name):
            raise InvalidRequestError(
                f"Cannot delete. Thing {name} is still attached to one or more principals "
                f"(locally: it has a certificate in the service's certificate folder)"
            )
        if expected_version is not None and expected_version != thing.version:
            raise VersionConflictError(
                f"Thing {name} is at version {thing.version}, not {expected_version}"
            )
        with self.store.transaction():
            self.store.execute("DELETE FROM group_members WHERE thing_name = ?", (name,))
            self.store.execute("DELETE FROM things WHERE name = ?", (name,))

    # thing groups

    def _group_row(self, name: str) -> Optional[ThingGroup]:
        rows = self.store.query(
            "SELECT name, group_id, description, attributes, parent, version, created_at"
            " FROM thing_groups WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        r = rows[0]
        return ThingGroup(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6])

    def group(self, name: str) -> ThingGroup:
        """Raises ResourceNotFoundError naming the group."""
        group = self._group_row(name)
        if group is None:
            raise ResourceNotFoundError(f"ThingGroup {name} does not exist")
        return group

    def get_group(self, name: str) -> Optional[ThingGroup]:
        return self._group_row(name)

    def group_by_id(self, group_id: str) -> Optional[ThingGroup]:
        rows = self.store.query("SELECT name FROM thing_groups WHERE group_id = ?", (group_id,))
        return self._group_row(rows[0][0]) if rows else None

    def create_group(
        self,
        name: str,
        parent: Optional[str],
        description: Optional[str],
        attributes: Mapping[str, str],
    ) -> ThingGroup:
        """Make a static group; the same definition again returns it.

        Raises ResourceNotFoundError for an unknown parent, ResourceAlreadyExistsError for
        the same name with another definition, InvalidRequestError past 7 levels.
        """
        existing = self._group_row(name)
        if existing is not None:
            if (existing.parent, existing.description, dict(existing.attributes)) != (
                parent,
                description,
                dict(attributes),
            ):
                raise ResourceAlreadyExistsError(
                    f"Thing Group {name} already exists with a different definition"
                )
            return existing
        if parent is not None:
            self.group(parent)
            if len(self.ancestors(parent)) + 2 > MAX_GROUP_DEPTH:
                raise InvalidRequestError(
                    f"parentGroupName {parent!r}: a group hierarchy has at most "
                    f"{MAX_GROUP_DEPTH} levels"
                )
        group = ThingGroup(
            name, str(uuid.uuid4()), description, dict(attributes), parent, 1, self._clock()
        )
        self.store.execute(
            "INSERT INTO thing_groups (name, group_id, description, attributes, parent, version,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                group.group_id,
                description,
                json.dumps(group.attributes),
                parent,
                1,
                group.created_at,
            ),
        )
        return group

    def ancestors(self, name: str) -> List[str]:
        """The group's parent, its parent's parent, ... up to the root."""
        chain: List[str] = []
        group = self._group_row(name)
        while group is not None and group.parent and group.parent not in chain:
            chain.append(group.parent)
            group = self._group_row(group.parent)
        return chain

    def children(self, name: str) -> List[str]:
        return [
            r[0]
            for r in self.store.query(
                "SELECT name FROM thing_groups WHERE parent = ? ORDER BY name", (name,)
            )
        ]

    def descendants(self, name: str) -> List[str]:
        found: List[str] = []
        todo = [name]
        while todo:
            for child in self.children(todo.pop()):
                if child not in found:
                    found.append(child)
                    todo.append(child)
        return found

    def list_groups(self) -> List[ThingGroup]:
        rows = self.store.query("SELECT name FROM thing_groups ORDER BY name")
        return [self.group(r[0]) for r in rows]

    def delete_group(self, name: str, expected_version: Optional[int]) -> None:
        """Delete a group and its memberships; an unknown name is no error.

        Raises InvalidRequestError while it has child groups, VersionConflictError.
        """
        group = self._group_row(name)
        if group is None:
            return
        if expected_version is not None and expected_version != group.version:
            raise VersionConflictError(
                f"Thing group {name} is at version {group.version}, not {expected_version}"
            )
        if self.children(name):
            raise InvalidRequestError(
                f"Cannot delete thing group : {name} when there are still child groups "
                f"attached to it ({', '.join(self.children(name))})"
            )
        with self.store.transaction():
            self.store.execute("DELETE FROM group_members WHERE group_name = ?", (name,))
            self.store.execute("DELETE FROM thing_groups WHERE name = ?", (name,))

    # memberships

    def add_member(self, group: str, thing: str) -> bool:
        """Put a thing in a group; True when it was not in it. Raises ResourceNotFoundError."""
        self.group(group)
        self.thing(thing)
        rows = self.store.query(
            "SELECT 1 FROM group_members WHERE group_name = ? AND thing_name = ?", (group, thing)
        )
        if rows:
            return False
        self.store.execute(
            "INSERT INTO group_members (group_name, thing_name) VALUES (?, ?)", (group, thing)
        )
        return True

    def remove_member(self, group: str, thing: str) -> bool:
        """Take a thing out of a group; True when it was in it. Raises ResourceNotFoundError."""
        self.group(group)
        self.thing(thing)
        rows = self.store.query(
            "SELECT 1 FROM group_members WHERE group_name = ? AND thing_name = ?", (group, thing)
        )
        self.store.execute(
            "DELETE FROM group_members WHERE group_name = ? AND thing_name = ?", (group, thing)
        )
        return bool(rows)

    def members(self, group: str, recursive: bool = False) -> List[str]:
        """Thing names in the group (and its descendants when ``recursive``), in join order."""
        groups = [group] + (self.descendants(group) if recursive else [])
        found: Dict[str, None] = {}
        for name in groups:
            for row in self.store.query(
                "SELECT thing_name FROM group_members WHERE group_name = ? ORDER BY seq", (name,)
            ):
                found.setdefault(row[0])
        return list(found)

    def groups_of(self, thing: str) -> List[str]:
        """Groups the thing is in directly, then their ancestors (a job on a parent reaches
        the things of its child groups)."""
        direct = [
            r[0]
            for r in self.store.query(
                "SELECT group_name FROM group_members WHERE thing_name = ? ORDER BY seq", (thing,)
            )
        ]
        found = list(direct)
        for name in direct:
            for ancestor in self.ancestors(name):
                if ancestor not in found:
                    found.append(ancestor)
        return found

    # tags

    def tags(self, arn: str) -> Dict[str, str]:
        rows = self.store.query(
            "SELECT key, value FROM tags WHERE resource_arn = ? ORDER BY key", (arn,)
        )
        return {r[0]: r[1] for r in rows}

    def tag(self, arn: str, tags: Mapping[str, str]) -> None:
        """Add or replace tags. Raises LimitExceeded-like InvalidRequestError past 50."""
        merged = {**self.tags(arn), **tags}
        if len(merged) > MAX_TAGS:
            raise InvalidRequestError(
                f"{arn} would have {len(merged)} tags; a resource has at most {MAX_TAGS}"
            )
        with self.store.transaction():
            for key, value in tags.items():
                self.store.execute(
                    "INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (arn, key, value)
                )

    def untag(self, arn: str, keys: Sequence[str]) -> None:
        with self.store.transaction():
            for key in keys:
                self.store.execute(
                    "DELETE FROM tags WHERE resource_arn = ? AND key = ?", (arn, key)
                )

    def forget_tags(self, arn: str) -> None:
        self.store.execute("DELETE FROM tags WHERE resource_arn = ?", (arn,))
