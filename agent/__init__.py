"""The AWS IoT Jobs device agent: settings, journal, errors and statusDetails helpers.

The Jobs protocol itself lives in ``job_client.py`` and the entry point in ``jobs_agent.py``
at the top of the repository; handlers live in subpackages such as ``agent.apt``.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
