"""Signed job documents: what signing costs, measured beside signing off in one run.

Two agents run side by side (``bench/noop_agent.py``: the real agent, its ``[security]`` gate
included, plus the NOOP job type): one without ``[security]`` (today's behaviour), one with
``require_signed_documents = yes`` and two trusted keys (Ed25519 and ECDSA P-256). Both idle
over the same windows, then take NOOP jobs in turn: unsigned ones for the first, the same job
signed with each key type for the second.
"""

from __future__ import annotations

import configparser
import datetime
import json
import os
import time
from pathlib import Path
from typing import Dict, List

from bench import procstat
from bench.agent_bench import IDLE_GAP_SECONDS, SETTLE_SECONDS, wait_until_claimed
from bench.agent_process import AgentProcess, noop_agent_command
from bench.baselines import Latency
from bench.context import BenchContext
from bench.load import NOOP_DOCUMENT, run_noop_job
from bench.observer import JobsObserver
from bench.report import Row
from bench.stats import median


def _signed_documents(folder: Path) -> Dict[str, str]:
    """A NOOP document signed with a new key of each type; their public keys in
    ``folder/trusted.pem``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from agent.signing import sign_document

    keys = {"Ed25519": ed25519.Ed25519PrivateKey.generate(),
            "P-256": ec.generate_private_key(ec.SECP256R1())}
    trusted = folder / "trusted.pem"
    trusted.write_bytes(b"".join(
        key.public_key().public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        for key in keys.values()))
    os.chmod(trusted, 0o644)
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    return {name: json.dumps(sign_document(json.loads(NOOP_DOCUMENT), key, expires=expires))
            for name, key in keys.items()}


def _require_signatures(settings_path: Path, trusted: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(settings_path)
    parser["security"] = {"require_signed_documents": "yes", "trusted_keys": str(trusted)}
    with open(settings_path, "w") as stream:
        parser.write(stream)


def signing_rows(ctx: BenchContext) -> List[Row]:
    """Idle CPU and RSS, and NOOP job turnaround, signing on beside signing off."""
    folder = Path(ctx.directory)
    documents = _signed_documents(folder)
    off, on = ctx.thing("bench-signing-off"), ctx.thing("bench-signing-on")
    _require_signatures(on.settings_path, folder / "trusted.pem")
    window = ctx.size(10.0, 30.0)
    per_run = ctx.size(20, 60)
    off_agent = AgentProcess(noop_agent_command(off.settings_path), folder / "signing-off.log")
    on_agent = AgentProcess(noop_agent_command(on.settings_path), folder / "signing-on.log")
    cpu: Dict[str, List[float]] = {"on": [], "off": []}
    rss: Dict[str, List[float]] = {"on": [], "off": []}
    turnaround: Dict[str, List[List[float]]] = {"off": [], "Ed25519": [], "P-256": []}
    with JobsObserver(ctx.privileged()) as observer:
        observer.watch(off.name)
        observer.watch(on.name)
        with off_agent, on_agent:
            wait_until_claimed(observer, off_agent, off.name)
            wait_until_claimed(observer, on_agent, on.name)
            time.sleep(SETTLE_SECONDS)
            for _ in range(min(ctx.runs, 3)):
                on_window, off_window = procstat.measure_cpu([on_agent.pid, off_agent.pid],
                                                             window)
                cpu["on"].append(on_window.percent)
                cpu["off"].append(off_window.percent)
                rss["on"].append(procstat.rss_mib(on_agent.pid))
                rss["off"].append(procstat.rss_mib(off_agent.pid))
            for run in range(ctx.runs):
                samples: Dict[str, List[float]] = {name: [] for name in turnaround}
                for index in range(per_run):
                    for name, thing, document in (("off", off, NOOP_DOCUMENT),
                                                  ("Ed25519", on, documents["Ed25519"]),
                                                  ("P-256", on, documents["P-256"])):
                        time.sleep(IDLE_GAP_SECONDS)
                        job_id = f"signing-{name[:3].lower()}-{run}-{index}"
                        created, finished = run_noop_job(ctx.iot, observer, thing.arn,
                                                         thing.name, job_id, document=document)
                        samples[name].append(
                            finished - observer.first_claim(thing.name, created, job_id))
                for name, values in samples.items():
                    turnaround[name].append(values)
    latency = {name: Latency.of_runs(runs) for name, runs in turnaround.items()}
    rows = [
        Row(f"agent idle CPU, signing on ({window:.0f} s windows)", median(cpu["on"]), "% CPU",
            median(cpu["off"]), "same agent, signing off"),
        Row("agent idle RSS, signing on (cryptography loaded)", median(rss["on"]), "MiB",
            median(rss["off"]), "same agent, signing off"),
    ]
    for name in ("Ed25519", "P-256"):
        rows.append(Row(f"no-op job turnaround p50, signed {name} (claim->SUCCEEDED)",
                        latency[name].p50_ms, "ms", latency["off"].p50_ms,
                        "unsigned, signing off"))
    return rows
