"""jobs_agent.run_agent with the managed-template handlers, as a process (for kill tests).

managed_child.py -c SETTINGS
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobs_agent  # noqa: E402
from agent.managed import managed_handlers  # noqa: E402
from agent.settings import load_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings(args.config)
    jobs_agent.configure_logging(settings.agent.log_level)
    return jobs_agent.run_agent(settings, managed_handlers(settings))


if __name__ == "__main__":
    sys.exit(main())
