"""JobClient end to end: real SDK client, real broker, local Jobs service, test handlers."""

from __future__ import annotations

import threading
import time

import pytest
from agent_core_fixtures import (
    InProcessAgent,
    Recorder,
    create_job,
    execution,
    wait_for,
    wait_status,
)
from local_jobs_fixtures import RawDevice
from resilience_fixtures import through_proxy

from agent.activity import Activity
from agent.errors import JobFailed, JobHandedOver, JobRejected
from agent.journal import JobRecord, JournalState, Phase
from local_jobs.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def recorder():
    recorder = Recorder()
    yield recorder
    recorder.release.set()


@pytest.fixture
def agent_factory(stack):
    made = []

    def make(**options):
        agent = InProcessAgent(stack, **options)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop(grace_seconds=0)


def test_job_queued_while_offline_runs_at_start(stack, agent_factory, recorder):
    create_job(stack, "offline-1", {"jobType": "QUICK", "answer": 42})
    agent_factory().add("QUICK", recorder.quick).start()
    done = wait_status(stack, "offline-1")
    assert done["status"] == "SUCCEEDED"
    assert done["details"] == {"answer": "42"}


def test_job_created_while_idle_is_run(stack, agent_factory, recorder):
    agent_factory().add("QUICK", recorder.quick).start()
    create_job(stack, "later-1", {"jobType": "QUICK"})
    assert wait_status(stack, "later-1")["status"] == "SUCCEEDED"


def test_job_queued_behind_a_running_one_runs_after_it(stack, agent_factory, recorder):
    agent_factory().add("BLOCK", recorder.blocking).add("QUICK", recorder.quick).start()
    create_job(stack, "first", {"jobType": "BLOCK"})
    wait_status(stack, "first", ["IN_PROGRESS"])
    create_job(stack, "second", {"jobType": "QUICK"})
    time.sleep(0.3)
    assert execution(stack, "second")["status"] == "QUEUED"
    recorder.release.set()
    assert wait_status(stack, "second")["status"] == "SUCCEEDED"
    assert execution(stack, "first")["status"] == "SUCCEEDED"
    assert [job_id for job_id, _ in recorder.calls] == ["first", "second"]


def test_progress_is_visible_while_the_job_runs(stack, agent_factory, recorder):
    agent_factory().add("BLOCK", recorder.blocking).start()
    create_job(stack, "progress-1", {"jobType": "BLOCK"})
    running = wait_for(
        lambda: (e := execution(stack, "progress-1"))["details"].get("step") and e,
        what="a progress report",
    )
    assert running["status"] == "IN_PROGRESS"
    recorder.release.set()
    done = wait_status(stack, "progress-1")
    assert done["status"] == "SUCCEEDED"
    assert int(done["details"]["steps"]) > 0


def test_handler_exception_gives_failed_with_its_message(stack, agent_factory):
    def explode(document, job):
        raise RuntimeError("disk on fire")

    agent_factory().add("EXPLODE", explode).start()
    create_job(stack, "boom-1", {"jobType": "EXPLODE"})
    done = wait_status(stack, "boom-1")
    assert done["status"] == "FAILED"
    assert done["details"] == {"reason": "RuntimeError: disk on fire", "errorCode": "HANDLER_ERROR"}


def test_job_failed_reports_reason_code_and_details(stack, agent_factory):
    def fail(document, job):
        raise JobFailed("package foo not found", "NOT_FOUND", {"package": "foo"})

    agent_factory().add("FAIL", fail).start()
    create_job(stack, "fail-1", {"jobType": "FAIL"})
    done = wait_status(stack, "fail-1")
    assert done["status"] == "FAILED"
    assert done["details"] == {
        "reason": "package foo not found",
        "errorCode": "NOT_FOUND",
        "package": "foo",
    }


def test_job_rejected_by_the_handler_is_reported_rejected(stack, agent_factory):
    def refuse(document, job):
        raise JobRejected("package 'evil' is not allowed", "NOT_ALLOWED")

    agent_factory().add("REFUSE", refuse).start()
    create_job(stack, "refuse-1", {"jobType": "REFUSE"})
    done = wait_status(stack, "refuse-1")
    assert done["status"] == "REJECTED"
    assert done["details"]["errorCode"] == "NOT_ALLOWED"


def test_unknown_job_type_is_rejected(stack, agent_factory, recorder):
    agent_factory().add("QUICK", recorder.quick).start()
    create_job(stack, "unknown-1", {"jobType": "TELEPORT"})
    done = wait_status(stack, "unknown-1")
    assert done["status"] == "REJECTED"
    assert done["details"]["errorCode"] == "NO_HANDLER"
    assert "'TELEPORT'" in done["details"]["reason"]
    assert recorder.calls == []


def test_long_result_is_cut_to_fit_keeping_its_tail(stack, agent_factory):
    def chatty(document, job):
        return {"output": "noise " * 1000 + "the end", "bad key!": "x"}

    agent_factory().add("CHATTY", chatty).start()
    create_job(stack, "chatty-1", {"jobType": "CHATTY"})
    done = wait_status(stack, "chatty-1")
    assert done["status"] == "SUCCEEDED"
    assert len(done["details"]["output"]) == 1024
    assert done["details"]["output"].endswith("the end")
    assert done["details"]["bad_key_"] == "x"


def test_heartbeats_keep_a_long_job_past_its_step_timeout(stack, agent_factory, recorder):
    # The stack's minute lasts 1 s: a 1-minute step timeout fires after 1 s of silence.
    agent_factory(step_timeout_minutes=1, heartbeat_seconds=0.25).add(
        "BLOCK", lambda d, j: time.sleep(3) or {"slept": "3"}
    ).start()
    create_job(stack, "long-1", {"jobType": "BLOCK"})
    done = wait_status(stack, "long-1", timeout=15)
    assert done["status"] == "SUCCEEDED"


def test_force_canceled_job_stops_being_reported(stack, agent_factory, recorder):
    stopped = threading.Event()
    reasons = []

    def until_stopped(document, job):
        while not job.wait(0.05):
            job.report_progress({"alive": str(time.monotonic())})
        reasons.append(job.stop_reason)
        stopped.set()
        return {"never": "reported"}

    agent_factory().add("LOOP", until_stopped).add("QUICK", recorder.quick).start()
    create_job(stack, "cancel-me", {"jobType": "LOOP"})
    wait_status(stack, "cancel-me", ["IN_PROGRESS"])
    create_job(stack, "after-cancel", {"jobType": "QUICK"})
    stack.iot_client().cancel_job(jobId="cancel-me", force=True)
    assert stopped.wait(10), "the handler was not told to stop"
    assert "refused the update" in reasons[0]
    assert wait_status(stack, "after-cancel")["status"] == "SUCCEEDED"
    assert execution(stack, "cancel-me")["status"] == "CANCELED"


def test_duplicate_notifications_run_nothing_twice(stack, agent_factory, recorder):
    agent_factory().add("QUICK", recorder.quick).add("BLOCK", recorder.blocking).start()
    create_job(stack, "dup-1", {"jobType": "QUICK"})
    done = wait_status(stack, "dup-1")
    create_job(stack, "dup-2", {"jobType": "BLOCK"})
    wait_status(stack, "dup-2", ["IN_PROGRESS"])
    certs = stack.certificates.service
    service = RawDevice(
        stack,
        "thing-1",
        identity=(str(certs.certificate), str(certs.private_key)),
        subscribe=["$aws/things/thing-1/jobs/notify"],
    )
    try:
        stale = {"jobId": "dup-1", "status": "QUEUED", "versionNumber": 1, "executionNumber": 1}
        running = {"jobId": "dup-2", "status": "QUEUED", "versionNumber": 1, "executionNumber": 1}
        for _ in range(3):
            service.publish("notify-next", {"timestamp": 1, "execution": running})
            service.publish("notify", {"timestamp": 1, "jobs": {"QUEUED": [stale, running]}})
            # A start-next reply nobody asked for (no token we sent) must be ignored.
            service.publish(
                "start-next/accepted",
                {"clientToken": "forged", "execution": {**stale, "jobDocument": {}}},
            )
        time.sleep(0.5)
        recorder.release.set()
        assert wait_status(stack, "dup-2")["status"] == "SUCCEEDED"
        time.sleep(0.3)
    finally:
        service.close()
    assert recorder.runs("dup-1") == 1
    assert recorder.runs("dup-2") == 1
    assert done["status"] == "SUCCEEDED"


def test_broker_restart_mid_job_recovers(stack, agent_factory, recorder):
    agent = agent_factory().add("BLOCK", recorder.blocking).start()
    create_job(stack, "restart-1", {"jobType": "BLOCK"})
    wait_status(stack, "restart-1", ["IN_PROGRESS"])
    stack.kill_broker()
    wait_for(lambda: not agent.client.is_connected(), what="the agent to notice")
    recorder.release.set()  # the job ends while the broker is down
    time.sleep(0.3)
    stack.start_broker()
    done = wait_status(stack, "restart-1", timeout=20)
    assert done["status"] == "SUCCEEDED"
    assert recorder.runs("restart-1") == 1


def test_job_queued_during_a_broker_outage_runs_after_reconnect(stack, agent_factory, recorder):
    agent = agent_factory().add("QUICK", recorder.quick).start()
    stack.kill_broker()
    wait_for(lambda: not agent.client.is_connected(), what="the agent to notice")
    create_job(stack, "outage-1", {"jobType": "QUICK"})
    stack.start_broker()
    assert wait_status(stack, "outage-1", timeout=20)["status"] == "SUCCEEDED"


def test_service_restart_mid_job_recovers_by_retrying(stack, agent_factory, recorder):
    agent_factory(request_timeout_seconds=1.0).add("BLOCK", recorder.blocking).start()
    create_job(stack, "svc-1", {"jobType": "BLOCK"})
    wait_status(stack, "svc-1", ["IN_PROGRESS"])
    stack.kill_service()
    recorder.release.set()  # the final status gets no reply until the service is back
    time.sleep(1.5)
    stack.start_service()
    assert wait_status(stack, "svc-1", timeout=20)["status"] == "SUCCEEDED"
    assert recorder.runs("svc-1") == 1


def test_stop_lets_the_running_job_finish_within_the_grace_period(stack, agent_factory):
    started = threading.Event()

    def short(document, job):
        started.set()
        time.sleep(0.5)
        return {"finished": "yes"}

    agent = agent_factory().add("SHORT", short).start()
    create_job(stack, "grace-1", {"jobType": "SHORT"})
    assert started.wait(10)
    agent.stop(grace_seconds=5)
    assert execution(stack, "grace-1")["status"] == "SUCCEEDED"


@pytest.mark.parametrize("safe_to_rerun", [True, False])
def test_stop_hands_over_a_job_that_overruns_the_grace_period(
    stack, agent_factory, safe_to_rerun
):
    started, release = threading.Event(), threading.Event()
    attempts = []

    def stubborn(document, job):  # ignores should_stop(), as a long dpkg run does
        attempts.append(job.attempt)
        started.set()
        if job.attempt == 1:
            release.wait(20)
        return {"attempt": str(job.attempt)}

    first = agent_factory().add("SLOW", stubborn, safe_to_rerun=safe_to_rerun).start()
    create_job(stack, "overrun-1", {"jobType": "SLOW"})
    assert started.wait(10)
    first.stop(grace_seconds=0.5)
    # Not FAILED for the stop: the journal keeps it RUNNING for the next start to decide.
    assert execution(stack, "overrun-1")["status"] == "IN_PROGRESS"
    assert first.journal.load().current.phase is Phase.RUNNING
    release.set()
    agent_factory().add("SLOW", stubborn, safe_to_rerun=safe_to_rerun).start()
    done = wait_status(stack, "overrun-1")
    if safe_to_rerun:
        assert (done["status"], done["details"]) == ("SUCCEEDED", {"attempt": "2"})
        assert attempts == [1, 2]
    else:
        assert done["status"] == "FAILED"
        assert done["details"]["errorCode"] == "INTERRUPTED"
        assert attempts == [1]


def test_second_stop_ends_the_grace_period_at_once(stack, agent_factory):
    started, release = threading.Event(), threading.Event()
    agent = agent_factory()
    agent.add("SLOW", lambda d, j: started.set() or release.wait(30)).start()
    create_job(stack, "overrun-2", {"jobType": "SLOW"})
    assert started.wait(10)
    agent.client.stop(grace_seconds=60, wait=False)
    agent.client.stop(grace_seconds=0, wait=False)
    assert agent.client.wait_stopped(15)
    release.set()
    assert execution(stack, "overrun-2")["status"] == "IN_PROGRESS"
    assert agent.journal.load().current.phase is Phase.RUNNING


def test_stop_tells_the_handler_to_stop(stack, agent_factory):
    started = threading.Event()

    def polite(document, job):
        started.set()
        job.wait(10)
        raise JobFailed(f"gave up: {job.stop_reason}", "STOPPED")

    agent = agent_factory().add("POLITE", polite).start()
    create_job(stack, "polite-1", {"jobType": "POLITE"})
    assert started.wait(10)
    agent.stop(grace_seconds=5)
    done = execution(stack, "polite-1")
    assert done["status"] == "FAILED"
    assert done["details"]["reason"] == "gave up: agent shutting down"


def test_agent_started_while_the_broker_is_down_connects_when_it_comes_up(
    stack, agent_factory, recorder
):
    stack.kill_broker()
    create_job(stack, "late-broker-1", {"jobType": "QUICK"})
    agent = agent_factory().add("QUICK", recorder.quick).start(wait_ready=False)
    time.sleep(1.5)  # at least one failed connection attempt
    assert not agent.client.ready.is_set()
    stack.start_broker()
    assert agent.client.ready.wait(15)
    assert wait_status(stack, "late-broker-1", timeout=15)["status"] == "SUCCEEDED"


def test_execution_the_journal_says_finished_is_not_run_again(stack, agent_factory, recorder):
    agent = agent_factory().add("QUICK", recorder.quick)
    agent.journal.save(JournalState(finished=(("again-1", 1),)))
    create_job(stack, "again-1", {"jobType": "QUICK"})
    agent.start()
    done = wait_status(stack, "again-1")
    assert done["status"] == "FAILED"
    assert done["details"]["errorCode"] == "DUPLICATE"
    assert recorder.calls == []


def test_connection_attempts_on_a_dead_network_time_out_and_are_retried(stack, agent_factory):
    with FaultProxy(stack.mqtt_port) as proxy:
        through_proxy(stack, proxy)
        proxy.blackhole("both")  # TCP connects, then nothing ever comes back
        create_job(stack, "dead-net-1", {"jobType": "QUICK"})
        agent = agent_factory(connect_timeout_seconds=0.5)
        agent.add("QUICK", lambda d, j: {"ok": "yes"}).start(wait_ready=False)
        time.sleep(1.5)  # past at least one attempt's timeout
        assert not agent.client.ready.is_set()
        proxy.restore()
        assert wait_status(stack, "dead-net-1", timeout=20)["status"] == "SUCCEEDED"


def test_job_handed_over_at_stop_goes_on_at_the_next_start(stack, agent_factory):
    started = threading.Event()
    attempts = []

    def reboot_like(document, job):
        attempts.append(job.attempt)
        if job.attempt == 1:
            started.set()
            job.wait(30)
            raise JobHandedOver("waiting for the reboot")
        return {"rebooted": "yes"}

    first = agent_factory().add("REBOOT", reboot_like)
    first.start()
    create_job(stack, "handover-1", {"jobType": "REBOOT"})
    assert started.wait(10)
    first.stop(grace_seconds=5)
    assert execution(stack, "handover-1")["status"] == "IN_PROGRESS"
    assert first.journal.load().current.phase is Phase.HANDED_OVER
    agent_factory().add("REBOOT", reboot_like).start()
    done = wait_status(stack, "handover-1")
    assert done["status"] == "SUCCEEDED"
    assert attempts == [1, 2]


def test_job_handed_over_while_not_stopping_is_failed(stack, agent_factory):
    def eager(document, job):
        raise JobHandedOver("wants a restart")

    agent_factory().add("EAGER", eager).start()
    create_job(stack, "handover-2", {"jobType": "EAGER"})
    done = wait_status(stack, "handover-2")
    assert done["status"] == "FAILED"
    assert done["details"]["errorCode"] == "HANDOVER_REFUSED"


def test_interrupted_job_claimed_while_stopping_stays_interrupted(stack, agent_factory):
    create_job(stack, "late-claim-1", {"jobType": "ONCE"})
    with FaultProxy(stack.mqtt_port) as proxy:
        through_proxy(stack, proxy)
        proxy.delay(0.2, "down")  # every reply comes late, the claim's too
        # The protocol thread itself asks for the stop as it sends the claim (ready), so the
        # stop is queued before the claim's reply, whatever this thread's scheduling.
        agent = agent_factory(
            request_timeout_seconds=8.0,
            on_ready=lambda: agent.client.stop(grace_seconds=0, wait=False),
        )
        agent.add("ONCE", lambda d, j: {"ran": "again"})  # not safe to re-run
        interrupted = JobRecord("late-claim-1", 1, 2, Phase.RUNNING, attempt=1)
        agent.journal.save(JournalState(current=interrupted))
        agent.start(wait_ready=False)
        assert agent.client.ready.wait(15)
        assert agent.client.wait_stopped(30)
    # The next start must still see a job that was running when the agent went away.
    assert agent.journal.load().current == interrupted


class RecordingActivity(Activity):
    """Records every state change the job client tells, in order."""

    def __init__(self):
        self.calls = []

    def connecting(self, error=None):
        self.calls.append(("connecting", error))

    def connected(self):
        self.calls.append(("connected",))

    def offline(self):
        self.calls.append(("offline",))

    def job_started(self, job_id, attempt):
        self.calls.append(("job_started", job_id, attempt))

    def job_phase(self, job_id, phase):
        self.calls.append(("job_phase", job_id, phase))

    def job_handed_over(self, job_id, reason):
        self.calls.append(("job_handed_over", job_id))

    def job_finished(self, job_id, status, reason=None):
        self.calls.append(("job_finished", job_id, status, reason))

    def stopping(self):
        self.calls.append(("stopping",))


def test_activity_hears_connection_job_phases_outcome_and_stop(stack, agent_factory):
    activity = RecordingActivity()

    def phased(document, job):
        for phase in ("downloading", "downloading", "installing"):
            job.report_progress({"phase": phase, "at": str(time.monotonic())})
            shown = ("job_phase", job.job_id, phase)
            wait_for(lambda shown=shown: shown in activity.calls, what=f"{shown} told")
        raise JobFailed("disk full", "NO_SPACE")

    agent = agent_factory(activity=activity).add("PHASED", phased).start()
    create_job(stack, "activity-1", {"jobType": "PHASED"})
    assert wait_status(stack, "activity-1")["status"] == "FAILED"
    agent.stop(grace_seconds=0)
    calls = [call for call in activity.calls if call[0] != "connected"]
    assert activity.calls[:2] == [("connecting", None), ("connected",)]
    assert calls[1:] == [
        ("job_started", "activity-1", 1),
        ("job_phase", "activity-1", "downloading"),
        ("job_phase", "activity-1", "installing"),
        ("job_finished", "activity-1", "FAILED", "disk full"),
        ("stopping",),
    ]


def test_activity_hears_a_job_handed_over_at_stop(stack, agent_factory):
    activity = RecordingActivity()
    started, release = threading.Event(), threading.Event()
    agent = agent_factory(activity=activity)
    agent.add("SLOW", lambda d, j: started.set() or release.wait(30)).start()
    create_job(stack, "activity-2", {"jobType": "SLOW"})
    assert started.wait(10)
    agent.stop(grace_seconds=0)
    release.set()
    assert activity.calls[-2:] == [("stopping",), ("job_handed_over", "activity-2")]


def test_activity_hears_why_connecting_fails(stack, agent_factory):
    activity = RecordingActivity()
    stack.kill_broker()
    agent = agent_factory(activity=activity).add("QUICK", lambda d, j: {}).start(wait_ready=False)
    wait_for(lambda: len(activity.calls) >= 2, what="a failed connection attempt")
    stack.start_broker()
    assert agent.client.ready.wait(15)
    assert activity.calls[0] == ("connecting", None)
    assert activity.calls[1][0] == "connecting" and activity.calls[1][1]
    assert ("connected",) in activity.calls
