"""Throwaway apt roots whose package lists hold the host's full Debian archive lists.

A real device has the whole Debian main archive in its lists (about 63,000 packages), where
opening the cache, planning and verifying cost far more than in a five-package root. This
module copies the host's own lists (``/var/lib/apt/lists``, refreshed by ``apt-get update``)
into a root made by ``local_jobs.apt_repo``, beside the local repository of test packages,
so the agent and ``apt-get`` can be compared where it matters. Nothing is downloaded.

Steps (each needed, see the comments): the local repository's lists first (an update deletes
lists of sources it does not know), apt's binary caches turned back on inside the root (a
Docker-style host turns them off, which a device never does), the Debian lists copied in
uncompressed with their InRelease files (what makes apt trust them), sources.list naming
both, then one ``apt-cache policy`` per root to build its own pkgcache.bin.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from bench.apt_get import apt_get_command
from local_jobs.apt_repo import AptRoot, Repository, make_root

HOST_LISTS = Path("/var/lib/apt/lists")
HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
MIN_PACKAGES = 20000  # fewer than this in the host's lists is not "the full archive"
DEVICE_CACHES = 'Dir::Cache::pkgcache "pkgcache.bin";\nDir::Cache::srcpkgcache "srcpkgcache.bin";\n'


class NoHostLists(RuntimeError):
    """The host has no (or too small) Debian package lists to copy; run apt-get update."""


def _list_prefix(uri: str, suite: str) -> str:
    """The file-name prefix apt gives a source's lists (apt's URItoFileName)."""
    bare = uri.split("://", 1)[-1].rstrip("/")
    return f"{bare}/dists/{suite}/".replace("/", "_")


def _deb822_sources(text: str) -> Iterator[Tuple[str, str, Sequence[str], str]]:
    for stanza in text.split("\n\n"):
        fields: Dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite, fields.get("components", "").split(), fields.get("signed-by", "")


def _one_line_sources(text: str) -> Iterator[Tuple[str, str, Sequence[str], str]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        options = ""
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                options += words.pop(0) + " "
            options += words.pop(0)
        if len(words) >= 2:
            signed = ""
            for option in options.strip("[]").split():
                if option.startswith("signed-by="):
                    signed = option.split("=", 1)[1]
            yield words[0], words[1], words[2:], signed


def host_debian_sources() -> List[str]:
    """One-line sources for every host source whose lists are in ``/var/lib/apt/lists``."""
    found: List[str] = []
    files: List[Path] = []
    for place in HOST_SOURCES:
        if place.is_file():
            files.append(place)
        elif place.is_dir():
            files.extend(sorted(p for p in place.iterdir() if p.suffix in (".list", ".sources")))
    for path in files:
        text = path.read_text(errors="replace")
        entries = _deb822_sources(text) if path.suffix == ".sources" else _one_line_sources(text)
        for uri, suite, components, signed_by in entries:
            if not (HOST_LISTS / (_list_prefix(uri, suite) + "InRelease")).is_file():
                continue
            option = f"[signed-by={signed_by}] " if signed_by else ""
            found.append(f"deb {option}{uri} {suite} {' '.join(components)}".rstrip())
    return found


def _decompressed(source: Path) -> Tuple[str, bytes]:
    name = source.name
    if name.endswith(".lz4"):
        data = subprocess.run(["lz4", "-dc", str(source)], check=True,
                              stdout=subprocess.PIPE).stdout
        return name[:-4], data
    if name.endswith(".gz"):
        return name[:-3], gzip.decompress(source.read_bytes())
    if name.endswith(".xz"):
        return name[:-3], lzma.decompress(source.read_bytes())
    return name, source.read_bytes()


def copy_host_lists(root: AptRoot) -> int:
    """Copy the host's Packages (uncompressed, as a device keeps them) and InRelease files
    into ``root``; returns how many package stanzas were copied."""
    lists = root.path / "var/lib/apt/lists"
    stanzas = 0
    for source in sorted(HOST_LISTS.iterdir()):
        if "_Packages" in source.name and source.is_file():
            name, data = _decompressed(source)
            (lists / name).write_bytes(data)
            stanzas += data.count(b"\nPackage: ") + data.startswith(b"Package: ")
        elif source.name.endswith("_InRelease"):
            shutil.copy2(source, lists / source.name)
    return stanzas


def prepare_full_roots(folder: Path, repository: Repository) -> Tuple[AptRoot, AptRoot]:
    """Two identical roots (agent's, apt-get's) reading ``repository`` and the host's Debian
    lists. Raises NoHostLists when the host has no full lists to copy."""
    debian = host_debian_sources()
    if not debian:
        raise NoHostLists(f"no Debian lists in {HOST_LISTS} match the host's sources; "
                          "run apt-get update first")
    local = repository.sources_line(scheme="copy")
    template = make_root(folder / "full-template", [local])
    (template.path / "etc/apt/apt.conf.d/50device-caches").write_text(DEVICE_CACHES)
    template.refresh_lists()  # before the copy: an update deletes lists of unknown sources
    stanzas = copy_host_lists(template)
    if stanzas < MIN_PACKAGES:
        raise NoHostLists(f"the host's lists hold {stanzas} packages, not a full archive")
    template.set_sources(local, *debian)
    (template.path / "var/lib/apt/periodic/update-success-stamp").touch()
    roots = (template.copy_to(folder / "full-agent-root"),
             template.copy_to(folder / "full-apt-get-root"))
    for root in roots:  # each root builds its own pkgcache.bin once, as a device has one
        subprocess.run(apt_get_command(root.path, "policy", tool="apt-cache"), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return roots
