"""APT_UPDATE job documents: what is accepted, what is REJECTED and why (pure), and that a
rejected document never starts the worker."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest
from apt_helpers import new_job

from agent.apt.document import AptRequest, PackageRequest, parse_document
from agent.apt.handler import AptUpdateHandler
from agent.apt.settings import AptSettings, load_apt_settings
from agent.errors import JobRejected, SettingsError
from agent.settings import Settings

ALL = ("*",)


@pytest.mark.parametrize(
    "document, expected",
    [
        (
            {"jobType": "APT_UPDATE", "aptPackageName": "cowsay"},
            AptRequest((PackageRequest("cowsay"),)),
        ),
        (
            {"aptPackageName": "libc6:amd64", "aptPackageVersion": "1:2.36-9+deb12u4~bpo1"},
            AptRequest((PackageRequest("libc6:amd64", "1:2.36-9+deb12u4~bpo1"),)),
        ),
        (
            {"aptPackages": ["a1", {"name": "b2", "version": "1.0"}, {"name": "c3"}]},
            AptRequest((PackageRequest("a1"), PackageRequest("b2", "1.0"), PackageRequest("c3"))),
        ),
        (
            {
                "aptPackageName": "g++",
                "allowDowngrade": True,
                "allowHeldChange": True,
                "refreshPackageLists": False,
                "dryRun": True,
            },
            AptRequest(
                (PackageRequest("g++"),),
                allow_downgrade=True,
                allow_held_change=True,
                refresh_lists=False,
                dry_run=True,
            ),
        ),
        (
            {"aptPackageName": "cowsay", "somethingElse": [1, 2], "refreshPackageLists": None},
            AptRequest((PackageRequest("cowsay"),)),
        ),
    ],
)
def test_valid_documents_become_requests(document, expected):
    assert parse_document(document, ALL) == expected


@pytest.mark.parametrize(
    "document, field",
    [
        ({"aptPackageName": ["cowsay"]}, "'aptPackageName' must be a string"),
        ({"aptPackageName": 7}, "'aptPackageName' must be a string"),
        ({"aptPackageName": "cowsay", "aptPackageVersion": 1.0}, "'aptPackageVersion'"),
        ({"aptPackageName": "cowsay", "allowDowngrade": "yes"}, "'allowDowngrade'"),
        ({"aptPackageName": "cowsay", "dryRun": 1}, "'dryRun'"),
        ({"aptPackageName": "cowsay", "refreshPackageLists": "true"}, "'refreshPackageLists'"),
        ({"aptPackages": "cowsay"}, "'aptPackages' must be a list"),
        ({"aptPackages": []}, "'aptPackages' is empty"),
        ({"aptPackages": [{"version": "1.0"}]}, "'aptPackages[0]' has no 'name'"),
        ({"aptPackages": ["ok", 3]}, "'aptPackages[1]'"),
        ({"aptPackages": [{"name": "ok", "version": ["1"]}]}, "'aptPackages[0].version'"),
        ({"aptPackages": ["same", "same"]}, "listed twice"),
        ({"aptPackages": [f"p{i}" for i in range(33)]}, "at most 32"),
        ({"aptPackageName": "a1", "aptPackages": ["b2"]}, "both"),
        ({"aptPackages": ["b2"], "aptPackageVersion": "1.0"}, "'aptPackageVersion'"),
        ({"jobType": "APT_UPDATE"}, "'aptPackageName'"),
        (["aptPackageName", "cowsay"], "JSON object"),
    ],
)
def test_wrong_types_and_shapes_are_rejected_naming_the_field(document, field):
    with pytest.raises(JobRejected) as raised:
        parse_document(document, ALL)

    assert raised.value.code == "INVALID_DOCUMENT"
    assert field in raised.value.reason


HOSTILE_NAMES = [
    "cowsay; rm -rf /",
    "cowsay && reboot",
    "$(reboot)",
    "`id`",
    "cowsay|sh",
    "-o",
    "-oAPT::Get::AllowUnauthenticated=true",
    "--allow-unauthenticated",
    "--allow-downgrades",
    "../../etc/passwd",
    "/tmp/evil.deb",
    "./evil.deb",
    "cowsay=1.0",
    "cowsay/unstable",
    "cow*",
    "Cowsay",
    "c",
    "cowsay\n",
    "cow say",
    "cowsay\x00",
    "ćowsay",
    "cowsay\u200b",
    "x" * 129,
    "",
]
HOSTILE_VERSIONS = ["1.0; reboot", "-1", "--force", "1.0 ", "../1", "1.0\n", "é1", "9" * 129, ""]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_package_names_are_rejected(name):
    with pytest.raises(JobRejected) as raised:
        parse_document({"aptPackageName": name}, ALL)

    assert raised.value.code == "INVALID_DOCUMENT"
    assert "aptPackageName" in raised.value.reason
    assert len(raised.value.reason) < 300


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
def test_hostile_versions_are_rejected(version):
    with pytest.raises(JobRejected) as raised:
        parse_document({"aptPackageName": "cowsay", "aptPackageVersion": version}, ALL)

    assert "aptPackageVersion" in raised.value.reason


@pytest.mark.parametrize(
    "document",
    [
        {"aptPackageName": "cowsay; reboot"},
        {"aptPackageName": "--allow-unauthenticated"},
        {"aptPackages": [{"name": "ok", "version": "-oDebug::pkgDPkgPM=1"}]},
        {"aptPackageName": "../../bin/sh"},
        {"aptPackageName": "x" * 100_000},
        {"aptPackageName": {"$ne": 1}},
        {"aptPackageName": "not-allowed-here"},
    ],
)
def test_rejected_documents_never_start_the_worker(tmp_path, document):
    marker = tmp_path / "worker-started"
    handler = AptUpdateHandler(
        AptSettings(root_dir=tmp_path, allowed_packages=("ok", "cowsay*", "x*", "[.]*")),
        worker_command=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
    )

    with pytest.raises(JobRejected):
        handler(document, new_job())

    assert not marker.exists()


@pytest.mark.parametrize(
    "name, patterns, allowed",
    [
        ("nginx", ("nginx",), True),
        ("libssl3", ("nginx", "libssl*"), True),
        ("libssl3:arm64", ("libssl*",), True),
        ("libssl3:arm64", ("libssl3:amd64",), False),
        ("libssl3:amd64", ("libssl3:amd64",), True),
        ("nginx-extras", ("nginx",), False),
        ("openssl", (), False),
    ],
)
def test_allow_list_globs(name, patterns, allowed):
    document = {"aptPackageName": name}
    if allowed:
        parse_document(document, patterns)
    else:
        with pytest.raises(JobRejected) as raised:
            parse_document(document, patterns)
        assert raised.value.code == "NOT_ALLOWED"
        assert "[apt] allowed_packages" in raised.value.reason


def settings_with(tmp_path: Path, text: str) -> Settings:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    path = tmp_path / "settings.conf"
    return Settings(path=path, connection=None, agent=None, sections=parser)


def test_missing_apt_section_gives_the_defaults(tmp_path):
    settings = load_apt_settings(settings_with(tmp_path, ""))

    assert settings == AptSettings()
    assert settings.allowed_packages == ()
    assert (settings.lock_timeout_seconds, settings.job_timeout_seconds) == (300, 3600)
    assert (settings.lists_max_age_minutes, settings.min_free_space_mb) == (1440, 50)


def test_apt_section_values_are_read(tmp_path):
    text = (
        f"[apt]\nroot_dir = {tmp_path}\nallowed_packages = nginx, libssl*\n  cowsay\n"
        "lock_timeout_seconds = 5\nlists_max_age_minutes = 0\njob_timeout_seconds = 60\n"
        "min_free_space_mb = 0\n"
    )
    settings = load_apt_settings(settings_with(tmp_path, text))

    assert settings == AptSettings(tmp_path.resolve(), ("nginx", "libssl*", "cowsay"), 5, 0, 60, 0)


@pytest.mark.parametrize(
    "line, message",
    [
        ("lock_timeout_seconds = soon", "[apt] lock_timeout_seconds: expected a number"),
        ("min_free_space_mb = -1", "[apt] min_free_space_mb: must be at least 0"),
        ("root_dir = /no/such/root", "[apt] root_dir: '/no/such/root' does not exist"),
        ("allowed_packages = nginx; reboot", "[apt] allowed_packages: 'nginx;'"),
        ("alowed_packages = nginx", "[apt] alowed_packages: unknown key"),
    ],
)
def test_bad_apt_settings_name_file_section_and_key(tmp_path, line, message):
    with pytest.raises(SettingsError) as raised:
        load_apt_settings(settings_with(tmp_path, f"[apt]\n{line}\n"))

    assert str(tmp_path / "settings.conf") in str(raised.value)
    assert message in str(raised.value)
