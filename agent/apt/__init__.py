"""The APT_UPDATE job handler: install or upgrade Debian packages with python-apt, safely.

``handler.AptUpdateHandler`` checks the job document (``document``), then runs the apt
transaction in a separate single-threaded process (``worker``), relays its progress and turns
its result into statusDetails or a JobFailed. Settings: ``settings`` (``[apt]``).
"""
