"""The real agent (``jobs_agent.run_agent``) with a NOOP job type that succeeds at once.

``python -m bench.noop_agent -c SETTINGS``: the same settings, journal, MQTT client, signal
handling and ``[security]`` document gate as ``jobs_agent.py``, but the only handler is
``{"jobType": "NOOP"}``, which does nothing, so that a benchmark times the agent's own cost
per job and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Mapping, Optional

from agent.errors import SettingsError
from agent.settings import load_settings
from agent.signing import document_gate_from_settings
from jobs_agent import configure_logging, get_job_type, run_agent

NOOP = "NOOP"


def noop(document: Mapping[str, object], job: object) -> Dict[str, str]:
    """Do nothing and succeed."""
    return {}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the agent with the NOOP handler first; exit status as ``jobs_agent.main``."""
    parser = argparse.ArgumentParser(prog="python -m bench.noop_agent")
    parser.add_argument("-c", "--config", required=True, help="agent settings file")
    parser.add_argument("--log-level", default="", help="overrides [agent] log_level")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        document_gate = document_gate_from_settings(settings)
    except SettingsError as error:
        configure_logging("ERROR")
        print(f"bad settings: {error}", file=sys.stderr)
        return 2
    configure_logging(args.log_level.upper() or settings.agent.log_level)
    return run_agent(settings, [(get_job_type, NOOP, noop)], document_gate=document_gate)


if __name__ == "__main__":
    sys.exit(main())
