"""README.md and docs/: a short front door, and every link in them leads somewhere real."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def prose_lines(page: Path) -> Iterator[str]:
    """The lines of ``page`` outside fenced code blocks."""
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, blanks to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> List[str]:
    return [anchor(line.lstrip("#")) for line in prose_lines(page) if re.match(r"#{1,6} ", line)]


def relative_links(page: Path) -> List[Tuple[str, str]]:
    """(target file or "", anchor or "") of every link in ``page`` that is not a URL."""
    links = []
    for line in prose_lines(page):
        for target in _LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            links.append((path, fragment))
    return links


def test_readme_is_a_front_door_of_at_most_300_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_readme_links_every_docs_page():
    linked = {path for path, _ in relative_links(README)}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_names_an_existing_file_and_heading(page):
    for path, fragment in relative_links(page):
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: link to missing {path}"
        if fragment and target.suffix == ".md":
            assert fragment in anchors(target), f"{page.name}: no heading #{fragment} in {path}"


# The shell blocks: every command names real files and real options, and the safe ones run.

# Where the options of a program named in the docs are defined: the program itself, and what
# it hands its arguments to.
OPTION_SOURCES = {
    "start.sh": ["start.sh", "jobs_agent.py", "local_jobs/demo.py"],
    "localjobs": ["localjobs", "local_jobs/*.py"],
    "run-tests.sh": [],  # its arguments go to pytest
}
# Options the AWS CLI adds to an operation's own (global ones and its customizations).
AWS_CLI_OPTIONS = {
    "query",
    "output",
    "endpoint-url",
    "region",
    "profile",
    "certificate-pem-outfile",
    "public-key-outfile",
    "private-key-outfile",
}


def shell_commands(page: Path) -> List[str]:
    """The commands of the ```sh blocks of ``page``: continuation lines joined, comments off."""
    commands, block, fenced = [], None, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            block = [] if fenced and line.strip() in ("```sh", "```bash") else None
            continue
        if block is None:
            continue
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + " " + line.strip()
        else:
            commands.append(line.strip())
    return [command for command in commands if command and not command.startswith("#")]


def words_of(command: str) -> List[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def simple_commands(command: str) -> Iterator[List[str]]:
    """The simple commands of a line (split at ; && || |), without sudo and VAR=value."""
    words: List[str] = []
    for word in [*words_of(command), ";"]:
        if word in (";", "&&", "||", "|", "&"):
            substituted = re.match(r"[A-Z_]+=\$\((.+)", words[0]) if words else None
            if substituted:  # VAR=$(command ...): check the command
                words = [substituted.group(1), *words[1:]]
                words[-1] = words[-1].rstrip(")")
            while words and (words[0] == "sudo" or re.match(r"[A-Z_]+=", words[0])):
                words.pop(0)
            if words:
                yield words
            words = []
        else:
            words.append(word)


def tracked_top_level() -> set:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line.split("/", 1)[0] for line in listed.splitlines()}


def repository_paths(words: List[str], top_level: set) -> List[str]:
    """The words that name something in this repository (``file://`` taken off)."""
    paths = []
    for word in words:
        word = word.split("=", 1)[-1] if word.startswith("--") else word
        word = word[len("file://") :] if word.startswith("file://") else word
        word = word[2:] if word.startswith("./") else word
        if word.split("/", 1)[0] in top_level and "$" not in word:
            paths.append(word)
    return paths


def program_file(words: List[str]) -> Optional[str]:
    """The repository file a command runs (``.venv/bin/python X.py``, ``./start.sh``...)."""
    first = words[0]
    if first.endswith("/python") or first in ("python3", "python"):
        scripts = [w for w in words[1:] if w.endswith(".py")]
        return scripts[0].lstrip("./") if scripts and words[1] != "-m" else None
    return first[2:] if first.startswith("./") else (first if "/" in first else None)


def option_names(words: List[str]) -> List[str]:
    return [w.split("=", 1)[0] for w in words[1:] if re.match(r"--[a-z]", w)]


COMMANDS = [(page, command) for page in PAGES for command in shell_commands(page)]


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p.name}:{c[:50]}" for p, c in COMMANDS])
def test_every_command_names_real_files_and_options(page, command):
    top_level = tracked_top_level()
    for words in simple_commands(command):
        for path in repository_paths(words, top_level):
            assert list(REPO_ROOT.glob(path)), f"{page.name}: {path} does not exist: {command}"
        program = program_file(words)
        if program is None or program.split("/", 1)[0] not in top_level:
            continue
        sources = OPTION_SOURCES.get(program, [program])
        text = "".join(
            path.read_text() for source in sources for path in sorted(REPO_ROOT.glob(source))
        )
        for option in option_names(words) if sources else []:
            assert option in text, f"{page.name}: {program} has no option {option}: {command}"


def aws_iot_commands() -> List[Tuple[str, List[str]]]:
    found = []
    for page, command in COMMANDS:
        for words in simple_commands(command):
            if Path(words[0]).name == "aws" and len(words) > 2 and words[1] == "iot":
                found.append((page.name, words))
    return found


@pytest.mark.parametrize(
    "page, words",
    aws_iot_commands(),
    ids=lambda value: " ".join(value[:3]) if isinstance(value, list) else value,
)
def test_every_aws_iot_command_is_a_real_operation_with_real_options(page, words):
    botocore_session = pytest.importorskip("botocore.session")
    model = botocore_session.get_session().get_service_model("iot")
    operation = "".join(part.capitalize() for part in words[2].split("-"))
    assert operation in model.operation_names, f"{page}: aws iot {words[2]} is not an operation"
    members = model.operation_model(operation).input_shape.members
    known = {re.sub(r"([A-Z])", r"-\1", name).lower() for name in members} | AWS_CLI_OPTIONS
    for option in option_names(words[2:]):
        name = option[2:]
        if name.startswith("no-"):
            name = name[3:]
        assert name in known, f"{page}: aws iot {words[2]} has no option {option}"


def test_the_readme_policy_commands_make_a_valid_policy(tmp_path):
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    [sed] = [c for c in shell_commands(README) if c.startswith("sed ") and "iot-policy" in c]
    env = dict(os.environ, REGION="eu-west-1", ACCOUNT="123456789012")
    subprocess.run(["bash", "-c", sed], cwd=tmp_path, env=env, check=True, timeout=30)
    policy = json.loads((tmp_path / "policy.json").read_text())
    resources = json.dumps(policy)
    assert "arn:aws:iot:eu-west-1:123456789012:" in resources
    assert "REGION" not in resources and "ACCOUNT" not in resources


def test_start_sh_help_runs_as_the_readme_says():
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "start.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    for mode in ("--local --demo", "--check-config", "status"):
        assert mode in result.stdout
