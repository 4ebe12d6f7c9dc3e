"""Download-File against a real HTTPS server whose certificate comes from a test CA."""

from __future__ import annotations

import hashlib
import json
import os
import pwd

import pytest
from managed_fixtures import FileServer, document, make_handler, make_job

from agent.errors import JobFailed, JobHandedOver, JobRejected
from agent.job import JobContext, StopReason
from agent.managed.document import mask_url
from agent.managed.download import resolve_target
from agent.managed.settings import DownloadSettings
from local_jobs.certificates import ensure_certificates

BODY = os.urandom(300_000)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return ensure_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def server(certs):
    server = FileServer(certs.server.certificate, certs.server.private_key)
    server.files["/f.bin"] = BODY
    yield server
    server.stop()


@pytest.fixture
def downloads(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def handler_for(tmp_path, certs, downloads, **options):
    settings = DownloadSettings(
        directory=downloads, ca_file=certs.ca.certificate, retry_delay_seconds=0.05, **options
    )
    return make_handler(tmp_path / "state", download=settings)


def download_doc(url, file_path, *extra):
    doc = document("AWS-Download-File", downloadUrl=url, filePath=file_path)
    doc["steps"][0]["action"]["input"]["args"].extend(extra)
    return doc


def test_file_is_downloaded_into_the_directory(tmp_path, certs, server, downloads):
    handler = handler_for(tmp_path, certs, downloads)
    details = handler(download_doc(server.url("/f.bin"), "sub/f.bin"), make_job())
    assert (downloads / "sub" / "f.bin").read_bytes() == BODY
    assert details["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert details["bytes"] == str(len(BODY))
    assert not list((downloads / "sub").glob(".*"))  # no partial files left


def test_absolute_path_inside_the_directory_is_accepted(tmp_path, certs, server, downloads):
    handler_for(tmp_path, certs, downloads)(
        download_doc(server.url("/f.bin"), str(downloads / "g.bin")), make_job()
    )
    assert (downloads / "g.bin").read_bytes() == BODY


def test_matching_checksum_is_accepted(tmp_path, certs, server, downloads):
    digest = hashlib.sha256(BODY).hexdigest()
    doc = download_doc(server.url("/f.bin"), "f.bin", f"sha256:{digest}")
    handler_for(tmp_path, certs, downloads)(doc, make_job())
    assert (downloads / "f.bin").exists()


def test_wrong_checksum_fails_and_leaves_no_file(tmp_path, certs, server, downloads):
    doc = download_doc(server.url("/f.bin"), "f.bin", "sha256:" + "0" * 64)
    with pytest.raises(JobFailed) as raised:
        handler_for(tmp_path, certs, downloads)(doc, make_job())
    assert raised.value.code == "CHECKSUM_MISMATCH"
    assert list(downloads.iterdir()) == []


def test_file_over_the_size_limit_fails(tmp_path, certs, server, downloads):
    handler = handler_for(tmp_path, certs, downloads, max_bytes=1000)
    with pytest.raises(JobFailed) as raised:
        handler(download_doc(server.url("/f.bin"), "f.bin"), make_job())
    assert raised.value.code == "TOO_LARGE"
    assert list(downloads.iterdir()) == []


def test_broken_connection_is_resumed_with_a_range_request(tmp_path, certs, server, downloads):
    server.cut_after["/f.bin"] = 100_000
    handler_for(tmp_path, certs, downloads)(download_doc(server.url("/f.bin"), "f.bin"), make_job())
    assert (downloads / "f.bin").read_bytes() == BODY
    assert [byte_range for _, byte_range in server.requests] == [None, "bytes=100000-"]


def test_redelivery_with_a_fresh_presigned_url_resumes_the_same_partial_file(
    tmp_path, certs, server, downloads
):
    # The first delivery got half the file before the agent stopped; after the restart the
    # service hands the same job over with a new signature: the download goes on.
    first = download_doc(server.url("/f.bin", "X-Amz-Signature=one"), "f.bin")
    part = downloads / ".f.bin.part"
    part.write_bytes(BODY[:120_000])
    identity = {"job": "job-1", "url": mask_url(first["steps"][0]["action"]["input"]["args"][0])}
    (downloads / ".f.bin.part.json").write_text(json.dumps(identity))
    second = download_doc(server.url("/f.bin", "X-Amz-Signature=two"), "f.bin")
    handler_for(tmp_path, certs, downloads)(second, make_job(attempt=2))
    assert (downloads / "f.bin").read_bytes() == BODY
    assert server.requests == [("/f.bin?X-Amz-Signature=two", "bytes=120000-")]


class StoppedMidDownload(JobContext):
    """A JobContext told to stop (``reason``) once the download reports its first bytes."""

    def __init__(self, reason):
        super().__init__("job-1", 1, 1, lambda: None)
        self._reason = reason

    def report_progress(self, details):
        super().report_progress(details)
        if "downloaded" in details:
            self._request_stop(self._reason)


def stopping_job(reason):
    return StoppedMidDownload(reason)


def test_download_stopped_by_the_agent_shutdown_is_handed_over_and_resumed(
    tmp_path, certs, server, downloads
):
    doc = download_doc(server.url("/f.bin"), "f.bin")
    with pytest.raises(JobHandedOver):
        handler_for(tmp_path, certs, downloads)(doc, stopping_job(StopReason.AGENT_STOPPING))
    got = (downloads / ".f.bin.part").stat().st_size
    assert 0 < got < len(BODY)
    assert not (downloads / "f.bin").exists()
    handler_for(tmp_path, certs, downloads)(doc, make_job(attempt=2))
    assert (downloads / "f.bin").read_bytes() == BODY
    assert [byte_range for _, byte_range in server.requests] == [None, f"bytes={got}-"]


def test_download_of_a_canceled_job_fails_and_leaves_no_partial_file(
    tmp_path, certs, server, downloads
):
    doc = download_doc(server.url("/f.bin"), "f.bin")
    with pytest.raises(JobFailed) as raised:
        handler_for(tmp_path, certs, downloads)(doc, stopping_job(StopReason.SERVICE_ENDED))
    assert raised.value.code == "STOPPED"
    assert sorted(path.name for path in downloads.iterdir()) == []


def test_partial_file_of_another_url_is_not_resumed(tmp_path, certs, server, downloads):
    (downloads / ".f.bin.part").write_bytes(b"x" * 1000)
    (downloads / ".f.bin.part.json").write_text('{"job": "job-1", "url": "https://other/x"}')
    doc = download_doc(server.url("/f.bin"), "f.bin")
    handler_for(tmp_path, certs, downloads)(doc, make_job(attempt=2))
    assert (downloads / "f.bin").read_bytes() == BODY
    assert server.requests[0][1] is None


def test_server_not_trusted_fails_with_a_tls_error(tmp_path, certs, server, downloads):
    settings = DownloadSettings(directory=downloads, retries=0)
    handler = make_handler(tmp_path / "state", download=settings)
    with pytest.raises(JobFailed) as raised:
        handler(download_doc(server.url("/f.bin"), "f.bin"), make_job())
    assert raised.value.code == "TLS_ERROR"


def test_missing_file_fails_with_the_http_status(tmp_path, certs, server, downloads):
    with pytest.raises(JobFailed, match="HTTP 404") as raised:
        handler_for(tmp_path, certs, downloads)(
            download_doc(server.url("/none"), "f.bin"), make_job()
        )
    assert raised.value.code == "HTTP_ERROR"


def test_redirect_to_plain_http_is_refused(tmp_path, certs, server, downloads):
    server.redirects["/moved"] = "http://127.0.0.1:1/f.bin"
    with pytest.raises(JobFailed, match="only https") as raised:
        handler_for(tmp_path, certs, downloads)(
            download_doc(server.url("/moved"), "f.bin"), make_job()
        )
    assert raised.value.code == "NOT_ALLOWED"


@pytest.mark.parametrize(
    "url", ["http://localhost/f.bin", "file:///etc/shadow", "ftp://h/f", "https:///nohost"]
)
def test_url_that_is_not_https_is_rejected(tmp_path, certs, downloads, url):
    with pytest.raises(JobRejected, match="only https") as raised:
        handler_for(tmp_path, certs, downloads)(download_doc(url, "f.bin"), make_job())
    assert raised.value.code == "NOT_ALLOWED"


def test_host_not_allowed_is_rejected(tmp_path, certs, server, downloads):
    handler = handler_for(tmp_path, certs, downloads, allowed_hosts=("*.amazonaws.com",))
    with pytest.raises(JobRejected, match="not in \\[download\\] allowed_hosts"):
        handler(download_doc(server.url("/f.bin"), "f.bin"), make_job())


@pytest.mark.parametrize(
    "file_path",
    ["../escape", "sub/../../escape", "/etc/cron.d/evil", "", "sub/", "a\x00b"],
)
def test_path_outside_the_directory_is_rejected(tmp_path, certs, server, downloads, file_path):
    with pytest.raises(JobRejected, match="filePath") as raised:
        handler_for(tmp_path, certs, downloads)(
            download_doc(server.url("/f.bin"), file_path), make_job()
        )
    assert raised.value.code == "NOT_ALLOWED"
    assert server.requests == []


def test_symlink_leading_out_of_the_directory_is_rejected(tmp_path, certs, server, downloads):
    outside = tmp_path / "outside"
    outside.mkdir()
    (downloads / "link").symlink_to(outside)
    with pytest.raises(JobRejected, match="leads outside"):
        handler_for(tmp_path, certs, downloads)(
            download_doc(server.url("/f.bin"), "link/f.bin"), make_job()
        )
    assert list(outside.iterdir()) == []


def test_downloads_are_rejected_without_a_directory(tmp_path):
    with pytest.raises(JobRejected, match="set \\[download\\] directory"):
        make_handler(tmp_path / "state")(download_doc("https://h/f", "f"), make_job())


def test_run_as_user_gets_the_file(tmp_path, certs, server, downloads):
    doc = download_doc(server.url("/f.bin"), "f.bin")
    doc["steps"][0]["action"]["runAsUser"] = "nobody"
    handler_for(tmp_path, certs, downloads)(doc, make_job())
    assert (downloads / "f.bin").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_resolve_target_takes_relative_paths_from_the_directory(tmp_path):
    assert resolve_target(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
