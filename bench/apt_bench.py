"""APT_UPDATE end to end against a direct ``apt-get install -y``, and the agent's memory.

One repository (built with ``local_jobs.apt_repo``, read with the ``copy:`` scheme so that
apt copies each .deb into the archives folder like a download), one root prepared once with
fresh package lists and copied twice: one for the agent (``[apt] root_dir``), one for
apt-get. Then the same in two roots whose lists also hold the host's full Debian archive
(``bench/apt_full_lists.py``), where a real device's cache costs what it costs. Before every
run both roots lose the package and their cached .debs, so each run installs from the same
state; which side goes first alternates between runs.
"""

from __future__ import annotations

import configparser
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

from bench import procstat
from bench.agent_bench import wait_until_claimed
from bench.agent_process import AgentProcess, real_agent_command
from bench.apt_full_lists import NoHostLists, prepare_full_roots
from bench.apt_get import run_apt_get_measured
from bench.context import BenchContext
from bench.observer import JobsObserver
from bench.report import Row, Target
from bench.stats import median
from local_jobs.apt_repo import AptRoot, Package, Repository, build_repository, make_root

THING = "bench-apt"
SETTLE_SECONDS = 2.0  # after the job, before "after": let the worker's exit be reaped
# (label, package name, incompressible payload bytes)
PACKAGES: Tuple[Tuple[str, str, int], ...] = (
    ("small package", "bench-small", 0),
    ("20 MiB package", "bench-large", 20 * 1024 * 1024),
)


def _repository(folder: Path) -> Repository:
    packages = [Package(name, "1.0-1", payload_bytes=size) for _label, name, size in PACKAGES]
    return build_repository(folder / "repo", packages)


def _prepare_roots(folder: Path, repository: Repository) -> Tuple[AptRoot, AptRoot]:
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
    # The lists are fresh (or, for the full archive, copied from the host): never refresh.
    parser.set("apt", "lists_max_age_minutes", "5256000")
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


@dataclass
class _Figures:
    agent_seconds: Dict[str, List[float]] = field(default_factory=dict)
    apt_get_seconds: Dict[str, List[float]] = field(default_factory=dict)
    apt_get_peak: List[float] = field(default_factory=list)
    before: List[float] = field(default_factory=list)
    peak: List[float] = field(default_factory=list)
    peak_tree: List[float] = field(default_factory=list)
    peak_unique: List[float] = field(default_factory=list)
    after: List[float] = field(default_factory=list)


def _compare(ctx: BenchContext, agent_root: AptRoot, apt_get_root: AptRoot, log_name: str
             ) -> _Figures:
    """Interleaved runs of the agent and apt-get into two identical roots."""
    figures = _Figures({label: [] for label, _, _ in PACKAGES},
                       {label: [] for label, _, _ in PACKAGES})
    settings = _agent_settings(ctx, agent_root)
    agent = AgentProcess(real_agent_command(settings), f"{ctx.directory}/{log_name}")

    def apt_get(package: str) -> float:
        seconds, peak_mib = run_apt_get_measured(apt_get_root.path, "install", "-y", package)
        figures.apt_get_peak.append(peak_mib)
        return seconds

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
                        figures.apt_get_seconds[label].append(apt_get(package))
                    figures.before.append(procstat.rss_mib(agent.pid))
                    job_id = f"apt-{log_name.split('.')[0]}-{run}-{package}"
                    elapsed, sampler = _agent_job(ctx, observer, agent, job_id, package)
                    figures.agent_seconds[label].append(elapsed)
                    figures.peak.append(sampler.peak_mib)
                    figures.peak_tree.append(sampler.peak_tree_mib)
                    figures.peak_unique.append(sampler.peak_unique_mib)
                    if not apt_get_first:
                        figures.apt_get_seconds[label].append(apt_get(package))
                    time.sleep(SETTLE_SECONDS)
                    figures.after.append(procstat.rss_mib(agent.pid))
                    for root in (agent_root, apt_get_root):
                        if root.installed_version(package) != "1.0-1":
                            raise RuntimeError(f"{package} is not installed in {root.path}")
    return figures


def apt_rows(ctx: BenchContext) -> List[Row]:
    """APT_UPDATE vs apt-get for each package size, in a root with only the test repository
    and in one whose lists also hold the host's full Debian archive; agent RSS around a job."""
    folder = Path(ctx.directory) / "apt"
    repository = _repository(folder)
    small = _compare(ctx, *_prepare_roots(folder, repository), "apt-agent.log")
    rows = [
        Row(f"APT_UPDATE end to end, {label}, 5-package lists (CreateJob->SUCCEEDED)",
            median(small.agent_seconds[label]), "s", median(small.apt_get_seconds[label]),
            "apt-get install -y, same root", Target.ratio_at_most(1.2))
        for label, _, _ in PACKAGES
    ]
    try:
        full_roots = prepare_full_roots(folder, repository)
    except NoHostLists as error:
        print(f"    apt: full Debian lists skipped: {error}", file=sys.stderr)
        full = None
    else:
        full = _compare(ctx, *full_roots, "apt-full-agent.log")
        rows += [
            Row(f"APT_UPDATE end to end, {label}, full Debian lists (CreateJob->SUCCEEDED)",
                median(full.agent_seconds[label]), "s", median(full.apt_get_seconds[label]),
                "apt-get install -y, same root", Target.ratio_at_most(1.2))
            for label, _, _ in PACKAGES
        ]
        rows += [
            Row("agent + apt worker RSS peak, full Debian lists", median(full.peak_unique),
                "MiB", median(full.apt_get_peak), "apt-get peak RSS, same root",
                Target.ratio_at_most(1.2)),
            Row("the same, each process's RSS added up (shared pages counted twice)",
                median(full.peak_tree), "MiB", median(full.apt_get_peak),
                "apt-get peak RSS, same root"),
        ]
    both = [small] + ([full] if full else [])
    before = median([value for f in both for value in f.before])
    after = median([value for f in both for value in f.after])
    rows += [
        Row("agent RSS before an APT job", before, "MiB", target=Target.below(30, "MiB")),
        Row("agent RSS peak during an APT job", median([v for f in both for v in f.peak]), "MiB",
            before, "before the job"),
        Row("agent + apt worker RSS peak, 5-package lists", median(small.peak_unique), "MiB",
            median(small.apt_get_peak), "apt-get peak RSS, same root"),
        Row("agent RSS after an APT job", after, "MiB", before, "before the job",
            Target.below(30, "MiB")),
    ]
    return rows
