"""jobs_agent.py as a process, with test handlers instead of APT_UPDATE (for kill/signal tests).

    agent_core_child.py -c SETTINGS --runs FILE

Runs ``jobs_agent.run_agent`` exactly as ``jobs_agent.main`` does, with these job types:

- ``SLEEP`` ``{"seconds": s}``: reports progress every 0.1 s for ``s`` seconds, stops early
  (JobFailed) when the job should stop; safe to re-run.
- ``SLEEP_ONCE``: the same, not safe to re-run.
- ``STUBBORN`` ``{"seconds": s}``: sleeps ``s`` seconds ignoring ``should_stop``.
- ``STUBBORN_RERUN`` ``{"seconds": s, "then": t}``: the same for ``s`` seconds on its first
  attempt, ``t`` on later ones; safe to re-run.

Each handler start appends ``<job id> <attempt>`` to the runs file (flushed at once), so a
test can count runs across restarts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobs_agent  # noqa: E402
from agent.errors import JobFailed  # noqa: E402
from agent.settings import load_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    args = parser.parse_args()

    def record(job) -> None:
        with open(args.runs, "a") as stream:
            stream.write(f"{job.job_id} {job.attempt}\n")
            stream.flush()
            os.fsync(stream.fileno())

    def sleep(document, job):
        record(job)
        deadline = time.monotonic() + float(document.get("seconds", 1))
        step = 0
        while time.monotonic() < deadline:
            if job.wait(0.1):
                raise JobFailed(f"stopped early: {job.stop_reason}", "STOPPED")
            step += 1
            job.report_progress({"step": str(step), "attempt": str(job.attempt)})
        return {"steps": str(step), "attempt": str(job.attempt)}

    def sleep_once(document, job):
        return sleep(document, job)

    def stubborn(document, job):
        record(job)
        time.sleep(float(document.get("seconds", 1)))
        return {"stubborn": "done"}

    def stubborn_rerun(document, job):
        record(job)
        time.sleep(float(document.get("seconds" if job.attempt == 1 else "then", 0)))
        return {"stubborn": "done", "attempt": str(job.attempt)}

    sleep.safe_to_rerun = True
    stubborn_rerun.safe_to_rerun = True
    settings = load_settings(args.config)
    jobs_agent.configure_logging(settings.agent.log_level)
    handlers = [
        (jobs_agent.get_job_type, "SLEEP", sleep),
        (jobs_agent.get_job_type, "SLEEP_ONCE", sleep_once),
        (jobs_agent.get_job_type, "STUBBORN", stubborn),
        (jobs_agent.get_job_type, "STUBBORN_RERUN", stubborn_rerun),
    ]
    document_gate = jobs_agent.document_gate_from_settings(settings)  # [security], as main does
    return jobs_agent.run_agent(settings, handlers, document_gate=document_gate)


if __name__ == "__main__":
    sys.exit(main())
