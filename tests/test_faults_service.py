"""Faults on the service side: the local Jobs service killed and restarted while several devices
are connected and running jobs; a job force-canceled while its handler runs (and ignores the
request to stop); a job timed out by the service while it runs. Each ends truthfully at the
service, nothing is reported for a job the service ended, and every agent takes the next job.
"""

from __future__ import annotations

import threading
import time

import pytest
from agent_core_fixtures import InProcessAgent, Recorder, create_job, execution, wait_status
from resilience_fixtures import wait_all_terminal

pytest_plugins = ("resilience_fixtures",)
pytestmark = pytest.mark.timeout(60)

THINGS = ("thing-1", "thing-2", "thing-3")


def test_service_restarted_while_three_devices_run_jobs(stack_factory, agents):
    stack = stack_factory(things=THINGS)
    recorders = {}
    for thing in THINGS:
        recorders[thing] = Recorder()
        agent = InProcessAgent(stack, thing, request_timeout_seconds=1.0)
        agent.add("BLOCK", recorders[thing].blocking).add("QUICK", recorders[thing].quick)
        agents.append(agent)
        agent.start()
    targets = [stack.thing(t).arn for t in THINGS]
    client = stack.iot_client()
    client.create_job(jobId="fleet-1", targets=targets, document='{"jobType": "BLOCK"}')
    for thing in THINGS:
        wait_status(stack, "fleet-1", ["IN_PROGRESS"], thing=thing)
    stack.kill_service()
    for recorder in recorders.values():
        recorder.release.set()  # every final status meets a dead service
    time.sleep(1.0)
    stack.start_service()
    client.create_job(jobId="fleet-2", targets=targets, document='{"jobType": "QUICK"}')
    for thing in THINGS:
        wait_all_terminal(stack, {"fleet-1": "SUCCEEDED", "fleet-2": "SUCCEEDED"}, thing, 30)
        assert recorders[thing].runs("fleet-1") == 1
        assert recorders[thing].runs("fleet-2") == 1


def test_a_force_canceled_job_whose_handler_ignores_it_is_never_reported(stack, agents):
    started, finished = threading.Event(), threading.Event()
    recorder = Recorder()

    def stubborn(document, job):
        started.set()
        time.sleep(1.5)  # never looks at job.should_stop()
        finished.set()
        return {"stubborn": "done"}

    agent = InProcessAgent(stack).add("STUBBORN", stubborn).add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    create_job(stack, "cancel-1", {"jobType": "STUBBORN"})
    assert started.wait(10)
    create_job(stack, "cancel-2", {"jobType": "QUICK"})
    stack.iot_client().cancel_job(jobId="cancel-1", force=True)
    assert finished.wait(10)
    wait_all_terminal(stack, {"cancel-1": "CANCELED", "cancel-2": "SUCCEEDED"})
    assert "stubborn" not in execution(stack, "cancel-1")["details"]
    assert recorder.runs("cancel-2") == 1


def test_a_job_timed_out_by_the_service_while_it_runs_stops_and_is_not_reported(stack, agents):
    reasons = []
    recorder = Recorder()

    def long_job(document, job):
        while not job.wait(0.05):
            job.report_progress({"alive": "yes"})
        reasons.append(job.stop_reason)
        return {"should": "not be reported"}

    agent = InProcessAgent(stack, heartbeat_seconds=0.2).add("LONG", long_job)
    agent.add("QUICK", recorder.quick)
    agents.append(agent)
    agent.start()
    # The stack's minute lasts 1 s: the service times the execution out after 1 s in progress.
    stack.iot_client().create_job(
        jobId="timeout-1",
        targets=[stack.thing("thing-1").arn],
        document='{"jobType": "LONG"}',
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
    )
    wait_status(stack, "timeout-1", ["TIMED_OUT"], timeout=15)
    create_job(stack, "timeout-2", {"jobType": "QUICK"})
    wait_all_terminal(stack, {"timeout-1": "TIMED_OUT", "timeout-2": "SUCCEEDED"})
    assert reasons and "TIMED_OUT" in reasons[0]
    assert "should" not in execution(stack, "timeout-1")["details"]
