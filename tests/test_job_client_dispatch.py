"""Dispatch (agent/dispatch.py): the first matching registration wins, and a document no
registration takes is explained in an operator's words (pure logic: parametrized tables)."""

from __future__ import annotations

import pytest

from agent.dispatch import Handlers, document_problem, filter_label
from jobs_agent import get_job_type


def get_document_kind(document):
    return "managed-template" if isinstance(document, dict) and "steps" in document else None


def apt(document, job):
    return {}


def managed(document, job):
    return {}


managed.handles = "the AWS managed templates AWS-Reboot, AWS-Run-Command"


def raising_filter(document):
    raise KeyError("jobType")


def agent_handlers():
    handlers = Handlers()
    handlers.add(get_job_type, "APT_UPDATE", apt)
    handlers.add(get_document_kind, "managed-template", managed)
    return handlers


@pytest.mark.parametrize(
    "document, handler",
    [
        ({"jobType": "APT_UPDATE"}, apt),
        ({"steps": []}, managed),
        ({"jobType": "MAKE_COFFEE"}, None),
        ({}, None),
    ],
)
def test_the_first_matching_registration_is_selected(document, handler):
    selected = agent_handlers().select(document)
    assert (selected.handler if selected else None) is handler


def test_a_filter_that_raises_does_not_match_and_later_ones_are_tried():
    handlers = Handlers()
    handlers.add(raising_filter, "X", apt)
    handlers.add(get_job_type, "X", managed)
    assert handlers.select({"jobType": "X"}).handler is managed


def test_the_earlier_of_two_matching_registrations_wins():
    handlers = Handlers()
    handlers.add(get_job_type, "X", apt)
    handlers.add(get_job_type, "X", managed)
    assert handlers.select({"jobType": "X"}).handler is apt


@pytest.mark.parametrize(
    "document, reason",
    [
        (
            {"jobType": "MAKE_COFFEE"},
            "unknown jobType 'MAKE_COFFEE'; this agent handles APT_UPDATE and the AWS managed "
            "templates AWS-Reboot, AWS-Run-Command",
        ),
        (
            {"jobType": 7},
            "unknown jobType 7; this agent handles APT_UPDATE and the AWS managed templates "
            "AWS-Reboot, AWS-Run-Command",
        ),
        (
            {"answer": 42},
            "the job document names no jobType or document kind; this agent handles "
            "APT_UPDATE and the AWS managed templates AWS-Reboot, AWS-Run-Command",
        ),
    ],
)
def test_no_match_says_what_was_asked_and_what_is_handled(document, reason):
    assert agent_handlers().explain_no_match(document) == reason


def test_no_match_quotes_a_long_value_in_part():
    reason = agent_handlers().explain_no_match({"jobType": "X" * 500})
    assert reason.startswith("unknown jobType 'XXXX")
    assert len(reason.split(";")[0]) < 100


def test_no_match_without_handlers_says_so():
    assert Handlers().explain_no_match({"jobType": "A"}) == (
        "the job document names no job type; this agent has no handlers"
    )


def test_values_without_a_description_are_named_by_their_value():
    handlers = Handlers()
    handlers.add(get_job_type, "A", apt)
    handlers.add(get_job_type, "B", apt)
    assert handlers.explain_no_match({"jobType": "C"}) == (
        "unknown jobType 'C'; this agent handles A and B"
    )


@pytest.mark.parametrize(
    "filter_, label",
    [(get_job_type, "jobType"), (get_document_kind, "document kind"), (len, "len")],
)
def test_filters_are_named_by_their_label_or_their_name(filter_, label):
    assert filter_label(filter_) == label


@pytest.mark.parametrize(
    "document, cut, problem",
    [
        ({"jobType": "A"}, False, ""),
        ({"jobType": "A"}, True, "job document is nested too deeply to read"),
        (["jobType"], False, "job document is not a JSON object"),
    ],
)
def test_documents_no_handler_may_see(document, cut, problem):
    assert document_problem(document, cut) == problem


def test_registration_takes_rerun_safety_from_the_handler_unless_told():
    def safe(document, job):
        return {}

    safe.safe_to_rerun = True
    handlers = Handlers()
    assert handlers.add(get_job_type, "A", safe).safe_to_rerun is True
    assert handlers.add(get_job_type, "B", safe, safe_to_rerun=False).safe_to_rerun is False
    assert handlers.add(get_job_type, "C", apt).safe_to_rerun is False


@pytest.mark.parametrize("bad", [("not callable", apt), (get_job_type, "not callable")])
def test_registration_of_something_not_callable_is_a_type_error(bad):
    with pytest.raises(TypeError):
        Handlers().add(bad[0], "A", bad[1])
