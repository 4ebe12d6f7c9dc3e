"""One set of request rules for every front end of the local Jobs service (validation.py),
and the process entry point (server.py) apart from the state machine."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from local_jobs import validation
from local_jobs.data_plane import handle_request
from local_jobs.model import InvalidRequestError, RetryCriterion, RetryFailureType
from local_jobs.service import LocalJobsService
from local_jobs.store import Store

REPO = Path(__file__).resolve().parent.parent
DOC = json.dumps({"jobType": "APT_UPDATE", "aptPackageName": "cowsay"})


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path / "jobs.sqlite3")
    svc = LocalJobsService(store, lambda topic, body: None, run_timers=False)
    yield svc
    svc.close()
    store.close()


@pytest.mark.parametrize(
    "check, value, message",
    [
        (validation.check_job_id, "bad.id", "jobId 'bad.id' is invalid: use 1 to 64 characters"),
        (validation.check_job_id, "x" * 65, "jobId 'xxx"),
        (validation.check_thing_name, "a/b", "thingName 'a/b' is invalid: use 1 to 128"),
        (validation.check_document, "x" * 32769, "document: the job document is 32769 characters"),
        (validation.check_document, "{nope", "document: the job document is not valid JSON"),
        (validation.check_document, "[1]", "document: the job document must be a JSON object"),
        (validation.check_document, 7, "document: the job document must be JSON text"),
        (validation.check_description, "d" * 2029, "description must be a string of at most 2028"),
        (validation.check_in_progress_timeout, 0, "inProgressTimeoutInMinutes must be 1 to 10080"),
        (validation.validate_step_timeout, 0, "stepTimeoutInMinutes must be 1-10080 or -1"),
        (validation.validate_status_details, {"k": 1}, "statusDetails value of 'k' must be"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(check, value, message):
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        check(value)


def test_more_than_ten_retries_in_all_are_refused():
    criteria = [
        RetryCriterion(RetryFailureType.FAILED, 6),
        RetryCriterion(RetryFailureType.TIMED_OUT, 5),
    ]
    with pytest.raises(InvalidRequestError, match="at most 10 retries"):
        validation.check_retry_criteria(criteria)


@pytest.mark.parametrize(
    "body, expected", [({"n": "3"}, 3), ({"n": 3}, 3), ({"n": 3.0}, 3), ({}, None)]
)
def test_device_numbers_come_as_numbers_or_decimal_strings(body, expected):
    assert validation.request_number(body, "n") == expected


def test_the_service_and_the_control_plane_word_a_bad_job_id_alike(service):
    with pytest.raises(InvalidRequestError) as direct:
        service.create_job("bad.id", ["t1"], DOC)
    with pytest.raises(InvalidRequestError) as checked:
        validation.check_job_id("bad.id")
    assert str(direct.value) == str(checked.value)


def test_the_mqtt_front_end_uses_the_same_status_details_message(service):
    service.create_job("j1", ["t1"], DOC)
    with service.operation():
        ((topic, reply),) = handle_request(
            service, "$aws/things/t1/jobs/j1/update",
            json.dumps({"status": "IN_PROGRESS", "statusDetails": {"k": 1}}).encode(),
        )
    with pytest.raises(InvalidRequestError) as checked:
        validation.validate_status_details({"k": 1})
    assert topic.endswith("/rejected")
    assert reply["message"] == str(checked.value)


def test_the_state_machine_imports_no_front_end_and_no_process_wiring():
    tree = ast.parse((REPO / "local_jobs" / "service.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for alias in node.names}
    assert not imported & {
        "local_jobs.data_plane", "local_jobs.control_plane", "local_jobs.server", "argparse"
    }


def test_the_service_process_starts_as_python_m_local_jobs_server():
    result = subprocess.run(
        [sys.executable, "-m", "local_jobs.server", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m local_jobs.server")
