"""A bare SDK client that connects, subscribes like a jobs client, then idles.

``python -m bench.sdk_idle_client SETTINGS`` prints ``ready`` once subscribed and stays
connected until SIGTERM or SIGINT, so that a benchmark can read its CPU and memory from /proc
over a window of its choosing. Nothing is tuned: this is the SDK as it ships.
"""

from __future__ import annotations

import signal
import sys
from typing import List, Optional

from bench.sdk import Connection, connect


def main(argv: Optional[List[str]] = None) -> int:
    """Connect as the thing of the settings file given, idle until SIGTERM/SIGINT."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.sdk_idle_client SETTINGS", file=sys.stderr)
        return 2
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the SDK starts its threads, so they inherit the mask and sigwait gets it.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    connection = Connection.from_settings(args[0])
    client = connect(connection)
    prefix = f"$aws/things/{connection.thing_name}/jobs"
    for suffix in ("notify-next", "start-next/accepted", "start-next/rejected"):
        client.subscribe(f"{prefix}/{suffix}", 1, lambda *_: None)
    print("ready", flush=True)
    signal.sigwait(stop_signals)
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
