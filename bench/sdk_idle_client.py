"""A bare SDK client that connects, subscribes like a jobs client, then idles.

Run as ``python -m bench.sdk_idle_client SETTINGS``: it prints ``ready`` once subscribed and
stays connected until its stdin closes, so that a benchmark can read its CPU and memory
from /proc over a window of its choosing.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from bench.sdk import Connection, connect


def main(argv: Optional[List[str]] = None) -> int:
    """Connect as the thing of the settings file given, idle until stdin closes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.sdk_idle_client SETTINGS", file=sys.stderr)
        return 2
    connection = Connection.from_settings(args[0])
    client = connect(connection)
    prefix = f"$aws/things/{connection.thing_name}/jobs"
    for suffix in ("notify-next", "start-next/accepted", "start-next/rejected"):
        client.subscribe(f"{prefix}/{suffix}", 1, lambda *_: None)
    print("ready", flush=True)
    sys.stdin.read()
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
