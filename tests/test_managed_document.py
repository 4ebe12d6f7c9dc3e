"""Managed-template documents: recognition, parsing and the presigned-URL comparison (pure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from managed_fixtures import TEMPLATES, document

from agent.errors import JobRejected
from agent.managed.document import (
    get_managed_action,
    is_managed_document,
    mask_url,
    parse_managed_document,
    same_document,
    split_command,
    words_of,
)


@pytest.mark.parametrize(
    "template, action",
    [
        ("AWS-Reboot", "Reboot"),
        ("AWS-Download-File", "Download-File"),
        ("AWS-Install-Application", "Install-Application"),
        ("AWS-Remove-Application", "Remove-Application"),
        ("AWS-Start-Application", "Start-Application"),
        ("AWS-Stop-Application", "Stop-Application"),
        ("AWS-Restart-Application", "Restart-Application"),
        ("AWS-Run-Command", "Run-Command"),
    ],
)
def test_each_template_is_recognised_by_its_action(template, action):
    assert get_managed_action(TEMPLATES[template]) == action


def test_action_comes_from_the_handler_not_the_free_text_name():
    doc = document("AWS-Install-Application", packages="cowsay")
    doc["steps"][0]["action"]["name"] = "Install Packages"
    assert get_managed_action(doc) == "Install-Application"


def test_old_operation_form_is_recognised():
    doc = {"operation": "install-packages.sh", "args": ["lftp", "dos2unix"], "path": "default"}
    assert get_managed_action(doc) == "Install-Application"
    parsed = parse_managed_document(doc)
    assert parsed.old_form and parsed.steps[0].args == ("lftp", "dos2unix")


@pytest.mark.parametrize("doc", [{"jobType": "APT_UPDATE"}, [], "text", None, {"other": 1}])
def test_other_documents_are_not_managed(doc):
    assert not is_managed_document(doc)
    assert get_managed_action(doc) is None


def test_unknown_handler_gives_its_own_name():
    doc = document("AWS-Reboot")
    doc["steps"][0]["action"]["input"]["handler"] = "my-script.sh"
    assert get_managed_action(doc) == "my-script.sh"


def test_template_parameters_fill_the_step():
    parsed = parse_managed_document(
        document("AWS-Download-File", downloadUrl="https://h/x", filePath="a/b", runAsUser="pi")
    )
    step = parsed.steps[0]
    assert (step.action, step.args, step.run_as_user, step.path) == (
        "Download-File",
        ("https://h/x", "a/b"),
        "pi",
        "",
    )


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(version="2.0"), "version"),
        (lambda d: d.update(steps=[]), "steps"),
        (lambda d: d.update(steps=[{"noaction": 1}]), "steps[0]"),
        (lambda d: d["steps"][0]["action"].update(type="runScript"), "steps[0].action.type"),
        (lambda d: d["steps"][0]["action"].update(input="x"), "steps[0].action.input"),
        (lambda d: d["steps"][0]["action"]["input"].update(args="x"), "args"),
        (lambda d: d["steps"][0]["action"].update(ignoreStepFailure="maybe"), "ignoreStepFailure"),
        (lambda d: d.update(includeStdOut=3), "includeStdOut"),
        (lambda d: d["steps"][0]["action"].update(allowStdErr=-1), "allowStdErr"),
    ],
)
def test_malformed_document_is_rejected_naming_the_field(change, field):
    doc = document("AWS-Start-Application", services="nginx")
    change(doc)
    with pytest.raises(JobRejected) as raised:
        parse_managed_document(doc)
    assert field in raised.value.reason
    assert raised.value.code == "INVALID_DOCUMENT"


def test_unsubstituted_placeholder_is_rejected():
    with pytest.raises(JobRejected, match=r"placeholder \$\{aws:iot:parameter:services\}"):
        parse_managed_document(TEMPLATES["AWS-Start-Application"])


def test_ignore_step_failure_and_include_stdout_accept_strings_and_booleans():
    doc = document("AWS-Run-Command", command="echo,hi")
    doc["includeStdOut"] = "true"
    doc["steps"][0]["action"]["ignoreStepFailure"] = True
    parsed = parse_managed_document(doc)
    assert parsed.include_stdout and parsed.steps[0].ignore_failure


def test_final_step_is_parsed_after_the_steps():
    doc = document("AWS-Run-Command", command="true")
    doc["finalStep"] = document("AWS-Run-Command", command="false")["steps"][0]
    parsed = parse_managed_document(doc)
    assert [step.where for step in parsed.all_steps()] == ["steps[0]", "finalStep"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("mkdir,newDir", ("mkdir", "newDir")),
        ("echo,a\\,b", ("echo", "a,b")),
        ("echo,,x", ("echo", "", "x")),
        ("echo,$(reboot);ls", ("echo", "$(reboot);ls")),
    ],
)
def test_command_splits_at_unescaped_commas(text, words):
    assert split_command(text) == words


def test_command_program_with_blanks_is_rejected():
    with pytest.raises(JobRejected, match="blanks"):
        parse_managed_document(document("AWS-Run-Command", command="rm -rf /"))


def test_space_separated_argument_is_a_list_of_words():
    assert words_of(("nginx  myapp",)) == ("nginx", "myapp")
    assert words_of(("lftp", "dos2unix")) == ("lftp", "dos2unix")


def test_presigned_query_string_is_masked():
    url = "https://b.s3.amazonaws.com/k/f.bin?X-Amz-Signature=abc&X-Amz-Expires=3600"
    assert mask_url(url) == "https://b.s3.amazonaws.com/k/f.bin"


def test_redelivery_with_a_fresh_presigned_url_is_the_same_document():
    first = document("AWS-Download-File", downloadUrl="https://h/f?sig=1", filePath="f")
    second = document("AWS-Download-File", downloadUrl="https://h/f?sig=2", filePath="f")
    other = document("AWS-Download-File", downloadUrl="https://h/g?sig=1", filePath="f")
    assert same_document(first, second)
    assert not same_document(first, other)


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "managed").glob("*.json"))


def _matches_template(template, example) -> bool:
    """True when ``example`` is ``template`` with its placeholders filled in."""
    if isinstance(template, str):
        pattern = re.escape(template)
        pattern = re.sub(r"\\\$\\\{aws:iot:parameter:[A-Za-z0-9_]+\\\}", ".*", pattern)
        return isinstance(example, str) and re.fullmatch(pattern, example) is not None
    if isinstance(template, dict):
        return (
            isinstance(example, dict)
            and template.keys() == example.keys()
            and all(_matches_template(template[key], example[key]) for key in template)
        )
    if isinstance(template, list):
        return (
            isinstance(example, list)
            and len(template) == len(example)
            and all(map(_matches_template, template, example))
        )
    return template == example


def test_there_is_an_example_for_every_template():
    assert [path.stem for path in EXAMPLES] == sorted(TEMPLATES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_is_its_template_with_parameters_substituted(path):
    example = json.loads(path.read_text())
    assert _matches_template(TEMPLATES[path.stem], example)
    parsed = parse_managed_document(example)
    assert parsed.steps[0].action == path.stem[len("AWS-") :]
