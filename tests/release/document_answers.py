"""The agent's answer (final status and statusDetails) to hostile and edge-case job documents.

The same document must get the same answer on every supported release, whatever its Python
(3.9 on Debian 11 to 3.13 on Debian 13): test_document_answers.py compares the answers with
document-answers.json, in the suite and, through the release tier, inside each Debian root.
Each document goes through the JobClient's real dispatch (the service's reply read by
agent/messages.py, the handler picked by jobType) over LoopbackMqtt, to the real APT_UPDATE
handler (its worker is never expected to start; were it started, it would fail) or to ECHO, a
handler that reports what the agent read from the document's "x".

    .venv/bin/python tests/release/document_answers.py            # the answers, as JSON
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

from resilience_fixtures import LoopbackMqtt  # noqa: E402

import jobs_agent  # noqa: E402
from agent.apt.handler import AptUpdateHandler  # noqa: E402
from agent.apt.settings import AptSettings  # noqa: E402
from job_client import JobClient  # noqa: E402

THING = "thing-1"
EXPECTED = HERE / "document-answers.json"


def echo(document: Dict[str, Any], job: Any) -> Dict[str, str]:
    """What the agent read from the document's "x": its type, size and first characters."""
    value = document.get("x")
    details = {"type": type(value).__name__, "value": repr(value)[:120]}
    if isinstance(value, (str, list, dict)):
        details["length"] = str(len(value))
    return details


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def _echo(x: str) -> str:
    return '{"jobType": "ECHO", "x": ' + x + "}"


def _apt(field: str, value: str) -> str:
    return '{"jobType": "APT_UPDATE", "' + field + '": ' + value + "}"


def documents() -> List[Tuple[str, str]]:
    """(name, raw JSON text of the job document), in the order they are sent."""
    # The document is the third level of the service's reply: "x" holding 61 nested arrays
    # reaches the agent's depth of 64 exactly.
    nesting = [(f"nested {n} deep", _echo(_nested(n))) for n in (61, 62, 100, 999, 1000, 1001)]
    nesting += [(f"nested {n} deep", _echo(_nested(n))) for n in (5000, 9000, 20000)]
    nesting.append(("objects nested 500 deep", _echo('{"a": ' * 500 + "1" + "}" * 500)))
    nesting.append(("deep value under a repeated key", _echo(_nested(200) + ', "x": 1')))
    nesting.append(("APT package name nested 200 deep", _apt("aptPackageName", _nested(200))))
    sizes = [
        ("40 KB string", _echo(json.dumps("a" * 40000))),
        ("10,000-element list", _echo(json.dumps(list(range(10000))))),
        ("2,000 keys", json.dumps({**{f"k{i}": i for i in range(2000)}, "jobType": "ECHO"})),
        ("40 KB package name", _apt("aptPackageName", json.dumps("a" * 40000))),
        ("5,000 packages", _apt("aptPackages", json.dumps(["cowsay"] * 5000))),
    ]
    numbers = [
        ("integer of 4,300 digits", _echo("9" * 4300)),
        ("integer of 4,301 digits", _echo("1" + "0" * 4300)),
        ("negative integer of 4,301 digits", _echo("-1" + "0" * 4300)),
        ("2**64", _echo(str(2**64))),
        ("1e999", _echo("1e999")),
        ("-1e999", _echo("-1e999")),
        ("1e-400", _echo("1e-400")),
        ("-0.0", _echo("-0.0")),
        ("largest double", _echo("1.7976931348623157e308")),
        ("0.1 with 30 digits", _echo("0.100000000000000000000000000001")),
        ("NaN", _echo("NaN")),
        ("Infinity", _echo("Infinity")),
        ("APT package name a huge integer", _apt("aptPackageName", "1" + "0" * 5000)),
        ("APT package name NaN", _apt("aptPackageName", "NaN")),
        ("APT dryRun 1", _apt("dryRun", "1")),
        ("APT version a float", _apt("aptPackageVersion", "1.0")),
    ]
    unicode = [
        ("lone high surrogate", _echo('"\\ud800"')),
        ("lone low surrogate", _echo('"\\udc00x"')),
        ("escaped surrogate pair", _echo('"\\ud83d\\ude00"')),
        ("raw emoji", _echo('"\U0001f600"')),
        ("escaped NUL", _echo('"a\\u0000b"')),
        ("byte order mark", _echo('"\\ufeffx"')),
        ("right-to-left override", _echo('"abc\\u202edef"')),
        ("combining accent", _echo('"e\\u0301"')),
        ("unicode key", '{"jobType": "ECHO", "x": 1, "\u00e9\u0301": 2}'),
        ("fullwidth job type", '{"jobType": "\uff25\uff23\uff28\uff2f", "x": 1}'),
        ("job type with a zero-width space", '{"jobType": "EC\\u200bHO", "x": 1}'),
        ("job type NUL-terminated", '{"jobType": "ECHO\\u0000", "x": 1}'),
        ("APT package name Cyrillic a", _apt("aptPackageName", '"cows\u0430y"')),
        ("APT package name fullwidth", _apt("aptPackageName", '"\uff43\uff4f\uff57"')),
        ("APT package name lone surrogate", _apt("aptPackageName", '"cowsay\\ud800"')),
        ("APT package name escaped NUL", _apt("aptPackageName", '"cowsay\\u0000x"')),
    ]
    shapes = [
        ("repeated key", '{"jobType": "ECHO", "x": 1, "x": 2}'),
        (
            "repeated APT package name",
            '{"jobType": "APT_UPDATE", "aptPackageName": "a", "aptPackageName": "cowsay"}',
        ),  # fmt: skip
        ("document a list", "[1, 2]"),
        ("document a string", '"ECHO"'),
        ("document null", "null"),
        ("no job type", '{"x": 1}'),
        ("job type a number", '{"jobType": 1}'),
        ("empty object", "{}"),
        ("APT package not allowed", _apt("aptPackageName", '"nginx"')),
        ("APT package with a shell command", _apt("aptPackageName", '"cowsay; touch /tmp/x"')),
    ]
    return nesting + sizes + numbers + unicode + shapes


def answers() -> Dict[str, Dict[str, Any]]:
    """``{document name: {"status": ..., "statusDetails": {...}}}`` for every document."""
    with tempfile.TemporaryDirectory() as scratch:
        worker = [sys.executable, "-c", "raise SystemExit(3)"]
        handler = AptUpdateHandler(
            AptSettings(root_dir=Path(scratch), allowed_packages=("cowsay",)),
            worker_command=worker,
        )
        mqtt = LoopbackMqtt(THING)
        client = JobClient(mqtt, THING, request_timeout_seconds=5, poll_interval_seconds=3600)
        client.add_handler(jobs_agent.get_job_type, "APT_UPDATE", handler)
        client.add_handler(jobs_agent.get_job_type, "ECHO", echo)
        client.start()
        try:
            if not client.ready.wait(10):
                raise RuntimeError("the JobClient did not get ready in 10 s")
            result = {}
            for index, (name, text) in enumerate(documents()):
                job_id = f"document-{index}"
                mqtt.queue_job(job_id, text)
                status, details = mqtt.final_of(job_id, timeout=30)
                result[name] = {"status": status, "statusDetails": details}
            return result
        finally:
            client.stop(grace_seconds=0)


def differences(got: Dict[str, Any], expected: Dict[str, Any]) -> Iterator[str]:
    """One line per document whose answer differs from the expected one."""
    for name in sorted(set(got) | set(expected)):
        if got.get(name) != expected.get(name):
            yield f"{name}: expected {expected.get(name)}, got {got.get(name)}"


if __name__ == "__main__":
    json.dump(answers(), sys.stdout, indent=1, sort_keys=True, ensure_ascii=True)
    sys.stdout.write("\n")
