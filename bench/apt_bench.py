"""APT_UPDATE end to end against a direct ``apt-get install -y``, and the agent's memory.

One repository (built with ``local_jobs.apt_repo``, read with the ``copy:`` scheme so that
apt copies each .deb into the archives folder like a download), one root prepared once with
fresh package lists and copied twice: one for the agent (``[apt] root_dir``), one for
apt-get. Before every run both roots lose the package and their cached .debs, so each run
installs from the same state; which side goes first alternates between runs.
"""

from __future__ import annotations

import configparser
import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

from bench import procstat
from bench.agent_bench import wait_until_claimed
from bench.agent_process import AgentProcess, real_agent_command
from bench.apt_get import run_apt_get
from bench.context import BenchContext
from bench.observer import JobsObserver
from bench.report import Row, Target
from bench.stats import median
from local_jobs.apt_repo import AptRoot, Package, build_repository, make_root

THING = "bench-apt"
SETTLE_SECONDS = 2.0  # after the job, before "after": let the worker's exit be reaped
# (label, package name, incompressible payload bytes)
PACKAGES: Tuple[Tuple[str, str, int], ...] = (
    ("small package", "bench-small", 0),
    ("20 MiB package", "bench-large", 20 * 1024 * 1024),
)


def _prepare_roots(folder: Path) -> Tuple[AptRoot, AptRoot]:
    packages = [Package(name, "1.0-1", payload_bytes=size) for _label, name, size in PACKAGES]
    repository = build_repository(folder / "repo", packages)
    template = make_root(folder / "template", [repository.sources_line(scheme="copy")])
    template.refresh_lists()
    return template.copy_to(folder / "agent-root"), template.copy_to(folder / "apt-get-root")


def _reset(root: AptRoot, package: str) -> None:
    if root.installed_version(package) is not None:
        root.dpkg("--purge", package)
    for deb in (root.path / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _agent_settings(ctx: BenchContext, root: AptRoot) -> Path:
    path = Path(ctx.thing(THING).settings_path)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    if not parser.has_section("apt"):
        parser.add_section("apt")
    parser.set("apt", "root_dir", str(root.path))
    parser.set("apt", "allowed_packages", "bench-*")
    with open(path, "w") as stream:
        parser.write(stream)
    return path


def _agent_job(ctx: BenchContext, observer: JobsObserver, agent: AgentProcess, job_id: str,
               package: str) -> Tuple[float, procstat.RssSampler]:
    """Run one APT_UPDATE job; its CreateJob->SUCCEEDED seconds and the RSS sampled meanwhile."""
    document = json.dumps({"jobType": "APT_UPDATE", "aptPackageName": package})
    with procstat.RssSampler(agent.pid) as sampler:
        created = time.perf_counter()
        ctx.iot.create_job(jobId=job_id, targets=[ctx.thing(THING).arn],
                                          document=document)
        observer.wait_for(lambda: observer.final_status(THING, job_id) is not None, 300,
                          f"final status of {job_id}")
        finished = observer.finished(created)[THING][job_id]
    status = observer.final_status(THING, job_id)
    if status != "SUCCEEDED":
        raise RuntimeError(f"APT job {job_id} ended {status}; see {agent.log_path}")
    return finished - created, sampler


def apt_rows(ctx: BenchContext) -> List[Row]:
    """APT_UPDATE vs apt-get for each package size; agent RSS before, during, after."""
    folder = Path(ctx.directory) / "apt"
    agent_root, apt_get_root = _prepare_roots(folder)
    settings = _agent_settings(ctx, agent_root)
    agent_times: Dict[str, List[float]] = {label: [] for label, _, _ in PACKAGES}
    apt_get_times: Dict[str, List[float]] = {label: [] for label, _, _ in PACKAGES}
    before, peak, peak_tree, after = [], [], [], []
    agent = AgentProcess(real_agent_command(settings), f"{ctx.directory}/apt-agent.log")
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(THING)
        with agent:
            wait_until_claimed(observer, agent, THING)
            time.sleep(SETTLE_SECONDS)
            for run in range(ctx.runs):
                for label, package, _size in PACKAGES:
                    _reset(agent_root, package)
                    _reset(apt_get_root, package)
                    apt_get_first = run % 2 == 0
                    if apt_get_first:
                        apt_get_times[label].append(
                            run_apt_get(apt_get_root.path, "install", "-y", package))
                    before.append(procstat.rss_mib(agent.pid))
                    elapsed, sampler = _agent_job(ctx, observer, agent, f"apt-{run}-{package}",
                                                  package)
                    agent_times[label].append(elapsed)
                    peak.append(sampler.peak_mib)
                    peak_tree.append(sampler.peak_tree_mib)
                    if not apt_get_first:
                        apt_get_times[label].append(
                            run_apt_get(apt_get_root.path, "install", "-y", package))
                    time.sleep(SETTLE_SECONDS)
                    after.append(procstat.rss_mib(agent.pid))
                    for root in (agent_root, apt_get_root):
                        if root.installed_version(package) != "1.0-1":
                            raise RuntimeError(f"{package} is not installed in {root.path}")
    rows = [
        Row(f"APT_UPDATE end to end, {label} (CreateJob->SUCCEEDED)", median(agent_times[label]),
            "s", median(apt_get_times[label]), "apt-get install -y, same root",
            Target.ratio_at_most(1.2))
        for label, _, _ in PACKAGES
    ]
    rows += [
        Row("agent RSS before an APT job", median(before), "MiB", target=Target.below(30, "MiB")),
        Row("agent RSS peak during an APT job", median(peak), "MiB", median(before),
            "before the job"),
        Row("agent + apt worker RSS peak during an APT job", median(peak_tree), "MiB",
            median(before), "before the job"),
        Row("agent RSS after an APT job", median(after), "MiB", median(before), "before the job",
            Target.below(30, "MiB")),
    ]
    return rows
