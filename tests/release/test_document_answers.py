"""The same hostile and edge-case job documents get the same status and statusDetails on every
supported release: the answers here are compared with document-answers.json, in the suite and
in each Debian root of the release tier (tests/release/run.sh)."""

import json
import platform

import pytest
from document_answers import EXPECTED, answers, differences

pytestmark = pytest.mark.timeout(300)


def test_every_document_gets_the_recorded_answer_on_this_python():
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    wrong = list(differences(answers(), expected))
    assert not wrong, f"Python {platform.python_version()}:\n" + "\n".join(wrong)
