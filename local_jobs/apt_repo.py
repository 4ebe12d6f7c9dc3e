"""Real .deb packages, a local apt repository and a throwaway apt/dpkg root, for tests, the
``./start.sh --local`` demo and bench/.

Nothing here touches the host's dpkg database: every dpkg call goes through the root's own
``usr/bin/dpkg`` wrapper, which runs the host's dpkg with ``--root=ROOT`` (maintainer scripts
run without chroot, with ``DPKG_ROOT`` set), and the root's ``etc/apt/apt.conf`` clears the
host's dpkg and update hooks. ``apt.Cache(rootdir=ROOT)`` (what the APT worker does when
``[apt] root_dir`` is set) then installs into the root. A root is relocatable: the wrapper finds
the root from its own path, so a prepared root can be copied with ``AptRoot.copy_to``.

Commands are argument lists, never a shell. Requires ``dpkg-deb`` and ``dpkg-scanpackages``
(package dpkg-dev).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

DPKG = "/usr/bin/dpkg"

# The wrapper apt runs as Dir::Bin::dpkg: the host's dpkg, confined to the root it sits in.
DPKG_WRAPPER = """\
#!/bin/sh
# dpkg for the throwaway root this file sits in (ROOT/usr/bin/dpkg): written by local_jobs.apt_repo.
ROOT=$(cd "$(dirname "$0")/../.." && pwd) || exit 2
exec {dpkg} --root="$ROOT" --log="$ROOT/var/log/dpkg.log" \\
    --force-not-root --force-bad-path --force-script-chrootless --force-unsafe-io "$@"
"""

# The host's apt configuration is loaded before the root's: its hooks (debconf pre-install,
# packagekit, docker-clean) would run against the host, so the root clears them.
APT_CONF = """\
// apt configuration of a throwaway root: written by local_jobs.apt_repo.
APT::Architecture "{arch}";
#clear APT::Architectures;
APT::Architectures {{ "{arch}"; }};
#clear DPkg::Pre-Install-Pkgs;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
"""

ROOT_DIRECTORIES = (
    "etc/apt/apt.conf.d",
    "etc/apt/preferences.d",
    "etc/apt/sources.list.d",
    "etc/apt/trusted.gpg.d",
    "usr/bin",
    "var/lib/dpkg/info",
    "var/lib/dpkg/updates",
    "var/lib/dpkg/triggers",
    "var/lib/dpkg/alternatives",
    "var/lib/apt/lists/partial",
    "var/lib/apt/periodic",
    "var/cache/apt/archives/partial",
    "var/log/apt",
    "var/run",
)

PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
MAINTAINER_SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")


class AptRepoError(RuntimeError):
    """Building a package, a repository or a root failed; the message holds the tool's output."""


def host_architecture() -> str:
    """The host's dpkg architecture (``dpkg --print-architecture``)."""
    return _run([DPKG, "--print-architecture"]).stdout.strip()


@dataclass(frozen=True)
class Package:
    """One binary package to build.

    ``files`` maps paths inside the package (``usr/share/foo/README``) to their content;
    ``scripts`` maps maintainer script names (``postinst``...) to their text (a ``#!/bin/sh``
    line is added when missing); ``payload_bytes`` adds that many incompressible bytes (bench
    downloads); relations are Debian relation strings (``"gamma (>= 1.0)"``).
    """

    name: str
    version: str
    depends: Sequence[str] = ()
    pre_depends: Sequence[str] = ()
    conflicts: Sequence[str] = ()
    breaks: Sequence[str] = ()
    provides: Sequence[str] = ()
    replaces: Sequence[str] = ()
    files: Mapping[str, Union[str, bytes]] = field(default_factory=dict)
    scripts: Mapping[str, str] = field(default_factory=dict)
    architecture: str = "all"
    essential: bool = False
    payload_bytes: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not PACKAGE_NAME.fullmatch(self.name):
            raise ValueError(f"package name {self.name!r} is not a Debian package name")
        unknown = set(self.scripts) - set(MAINTAINER_SCRIPTS)
        if unknown:
            raise ValueError(f"package {self.name}: unknown maintainer scripts {sorted(unknown)}")

    @property
    def filename(self) -> str:
        """The conventional file name: ``name_version_arch.deb`` (epoch left out)."""
        version = self.version.split(":", 1)[-1]
        return f"{self.name}_{version}_{self.architecture}.deb"

    def control(self, installed_size_kb: int) -> str:
        """The DEBIAN/control text."""
        lines = [
            f"Package: {self.name}",
            f"Version: {self.version}",
            f"Architecture: {self.architecture}",
            "Maintainer: Jobs Agent Tests <tests@example.invalid>",
            f"Installed-Size: {installed_size_kb}",
            "Section: misc",
            "Priority: optional",
        ]
        if self.essential:
            lines.append("Essential: yes")
        relations = (
            ("Pre-Depends", self.pre_depends),
            ("Depends", self.depends),
            ("Conflicts", self.conflicts),
            ("Breaks", self.breaks),
            ("Provides", self.provides),
            ("Replaces", self.replaces),
        )
        lines.extend(f"{key}: {', '.join(values)}" for key, values in relations if values)
        summary = self.description or f"test package {self.name} {self.version}"
        lines.append(f"Description: {summary}")
        lines.append(" Built by local_jobs.apt_repo for tests and the local demo.")
        return "\n".join(lines) + "\n"


def failing_script(message: str, status: int = 1) -> str:
    """A maintainer script that prints ``message`` to stderr and exits with ``status``."""
    return f"#!/bin/sh\necho {_sh_quote(message)} >&2\nexit {int(status)}\n"


def reboot_required_script() -> str:
    """A postinst that asks for a reboot the way Debian packages do (var/run/reboot-required)."""
    return (
        "#!/bin/sh\n"
        'if [ "$1" = configure ]; then\n'
        '    mkdir -p "$DPKG_ROOT/var/run" && touch "$DPKG_ROOT/var/run/reboot-required"\n'
        "fi\n"
    )


def build_deb(package: Package, directory: os.PathLike) -> Path:
    """Build ``package`` into ``directory`` with dpkg-deb; returns the .deb path.

    Raises AptRepoError when dpkg-deb fails.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree = directory / f".build-{package.name}-{os.getpid()}"
    if tree.exists():
        shutil.rmtree(tree)
    try:
        size = 0
        for relative, content in _package_files(package).items():
            target = tree / relative.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            target.write_bytes(data)
            size += len(data)
        debian = tree / "DEBIAN"
        debian.mkdir(parents=True, exist_ok=True)
        (debian / "control").write_text(package.control(max(1, (size + 1023) // 1024)))
        for name, text in package.scripts.items():
            script = debian / name
            script.write_text(text if text.startswith("#!") else "#!/bin/sh\n" + text)
            script.chmod(0o755)
        output = directory / package.filename
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(output)])
        return output
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _package_files(package: Package) -> Dict[str, Union[str, bytes]]:
    files: Dict[str, Union[str, bytes]] = dict(package.files)
    if not files:
        files[f"usr/share/{package.name}/version"] = package.version + "\n"
    if package.payload_bytes:
        files[f"usr/share/{package.name}/payload.bin"] = os.urandom(package.payload_bytes)
    return files


@dataclass(frozen=True)
class Repository:
    """A flat apt repository: .deb files and their Packages index in one folder."""

    path: Path
    packages: Tuple[Package, ...]

    def sources_line(self, *, trusted: bool = True, scheme: str = "file") -> str:
        """The sources.list line for this repository.

        ``scheme`` "file" makes apt read the .debs in place; "copy" makes it copy them into
        the archives folder like a download (measurable bytes). ``trusted=False`` marks the
        repository insecure-but-allowed, so its packages are untrusted.
        """
        option = "trusted=yes" if trusted else "allow-insecure=yes"
        return f"deb [{option}] {scheme}:{self.path} ./"

    def deb(self, name: str, version: str) -> Path:
        """The .deb file of ``name`` at ``version``; KeyError if the repository lacks it."""
        for package in self.packages:
            if package.name == name and package.version == version:
                return self.path / package.filename
        raise KeyError(f"{name}={version} is not in the repository at {self.path}")


def build_repository(directory: os.PathLike, packages: Sequence[Package]) -> Repository:
    """Build every package into ``directory`` and index them (``dpkg-scanpackages -m``).

    All versions of a package are listed. Raises AptRepoError.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for package in packages:
        build_deb(package, directory)
    index = _run(["dpkg-scanpackages", "-m", ".", "/dev/null"], cwd=directory).stdout
    (directory / "Packages").write_text(index)
    return Repository(path=directory, packages=tuple(packages))


@dataclass(frozen=True)
class AptRoot:
    """A throwaway apt/dpkg root (what ``[apt] root_dir`` points at)."""

    path: Path

    @property
    def dpkg_path(self) -> Path:
        """The root's dpkg wrapper."""
        return self.path / "usr/bin/dpkg"

    @property
    def admin_dir(self) -> Path:
        """The root's dpkg database folder (var/lib/dpkg)."""
        return self.path / "var/lib/dpkg"

    @property
    def frontend_lock(self) -> Path:
        """The dpkg frontend lock apt takes first (var/lib/dpkg/lock-frontend)."""
        return self.admin_dir / "lock-frontend"

    def dpkg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the root's dpkg with ``args``; raises AptRepoError if ``check`` and it fails."""
        environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        return _run([str(self.dpkg_path), *args], check=check, env=environment)

    def install(self, *debs: os.PathLike) -> None:
        """Install .deb files straight with dpkg (setting up a scenario)."""
        self.dpkg("--install", *(str(deb) for deb in debs))

    def unpack(self, *debs: os.PathLike) -> None:
        """Unpack .deb files without configuring them (state: unpacked)."""
        self.dpkg("--unpack", *(str(deb) for deb in debs))

    def hold(self, name: str) -> None:
        """Put ``name`` on hold (``dpkg --set-selections``)."""
        self._set_selection(name, "hold")

    def unhold(self, name: str) -> None:
        """Take ``name`` off hold."""
        self._set_selection(name, "install")

    def _set_selection(self, name: str, selection: str) -> None:
        environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(
            [str(self.dpkg_path), "--set-selections"],
            input_text=f"{name} {selection}\n",
            env=environment,
        )

    def status(self, name: str) -> Dict[str, str]:
        """The fields of ``name``'s stanza in the dpkg status file ({} if absent)."""
        for stanza in _stanzas((self.admin_dir / "status").read_text()):
            if stanza.get("Package") == name:
                return stanza
        return {}

    def installed_version(self, name: str) -> Optional[str]:
        """The version dpkg says is installed (also when only unpacked), or None."""
        stanza = self.status(name)
        state = stanza.get("Status", "").split()
        if len(state) == 3 and state[2] not in ("not-installed", "config-files"):
            return stanza.get("Version")
        return None

    def interrupt_dpkg(self, deb: os.PathLike) -> str:
        """Leave dpkg as a power cut during configuration would.

        Unpacks ``deb`` and writes a journal entry (var/lib/dpkg/updates) that marks it
        half-configured, so apt refuses to work until ``dpkg --configure -a`` runs. Returns
        the package name.
        """
        self.unpack(deb)
        info = _run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"])
        fields = dict(_stanzas(info.stdout)[0])
        stanza = self.status(fields["Package"])
        stanza["Status"] = "install ok half-configured"
        journal = self.admin_dir / "updates" / "0000"
        journal.write_text("".join(f"{key}: {value}\n" for key, value in stanza.items()))
        return fields["Package"]

    def journal_dirty(self) -> bool:
        """True while dpkg's journal (var/lib/dpkg/updates/[0-9]*) holds entries."""
        return any(entry.name[:1].isdigit() for entry in (self.admin_dir / "updates").iterdir())

    def reboot_required(self) -> bool:
        """True when a package asked for a reboot (var/run/reboot-required)."""
        return (self.path / "var/run/reboot-required").exists()

    def refresh_lists(self) -> None:
        """Read the repositories into the root's package lists (``apt-get update``).

        Runs python-apt in a child process: its configuration is process-global.
        Raises AptRepoError.
        """
        _run([sys.executable, "-m", "local_jobs.apt_repo", "update", str(self.path)],
             cwd=Path(__file__).resolve().parent.parent)

    def age_lists(self, seconds: float) -> None:
        """Make the package lists look ``seconds`` old (tests of the refresh policy)."""
        then = time.time() - seconds
        stamp = self.path / "var/lib/apt/periodic/update-success-stamp"
        for path in [stamp, *(self.path / "var/lib/apt/lists").glob("*Packages*")]:
            if path.is_symlink() or path.exists():
                # the lists entry itself, also when apt made it a symlink to a file: repository
                os.utime(path, (then, then), follow_symlinks=False)

    def set_sources(self, *lines: str) -> None:
        """Replace etc/apt/sources.list with ``lines``."""
        (self.path / "etc/apt/sources.list").write_text("".join(line + "\n" for line in lines))

    def copy_to(self, destination: os.PathLike) -> AptRoot:
        """A copy of this root at ``destination`` (must not exist)."""
        destination = Path(destination).resolve()
        shutil.copytree(self.path, destination, symlinks=True)
        for lock in destination.rglob("lock*"):
            if lock.is_file() and lock.name in ("lock", "lock-frontend"):
                lock.unlink()
        return AptRoot(destination)


def make_root(
    path: os.PathLike, sources: Sequence[str], *, architecture: Optional[str] = None
) -> AptRoot:
    """Create an empty throwaway root at ``path`` reading ``sources`` (sources.list lines).

    The root has an empty dpkg database, the dpkg wrapper, and an apt.conf that sets the
    architecture (the host's by default) and clears the host's hooks.
    """
    root = Path(path).resolve()
    for directory in ROOT_DIRECTORIES:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for name in ("status", "available"):
        (root / "var/lib/dpkg" / name).touch()
    wrapper = root / "usr/bin/dpkg"
    wrapper.write_text(DPKG_WRAPPER.format(dpkg=DPKG))
    wrapper.chmod(0o755)
    arch = architecture or host_architecture()
    (root / "etc/apt/apt.conf").write_text(APT_CONF.format(arch=arch))
    result = AptRoot(root)
    result.set_sources(*sources)
    return result


@dataclass(frozen=True)
class DemoApt:
    """What ``./start.sh --local`` needs: a root, its repository, the allow-list and a job."""

    root: Path
    repository: Repository
    allowed_packages: Tuple[str, ...]
    example_document: Dict[str, str]


DEMO_PACKAGES = (
    Package(
        "cowsay",
        "3.03+dfsg2-8",
        depends=("cowsay-data",),
        files={"usr/games/cowsay": "#!/bin/sh\necho \"(moo) $*\"\n"},
        description="stand-in for cowsay, built locally by local_jobs.apt_repo",
    ),
    Package("cowsay-data", "3.03+dfsg2-8", description="stand-in data for the demo cowsay"),
    Package("hello-iot", "1.0-1", description="demo package, first version"),
    Package("hello-iot", "2.0-1", description="demo package, second version"),
)


def demo_setup(folder: os.PathLike, *, keep_root: bool = False) -> DemoApt:
    """Build the demo repository and a root with fresh package lists below ``folder``.

    With ``keep_root``, a root made before is kept with what jobs installed into it
    (``./localjobs up`` run again); otherwise it is made anew.
    """
    folder = Path(folder).resolve()
    repository = build_repository(folder / "repo", DEMO_PACKAGES)
    root_path = folder / "root"
    if keep_root and (root_path / "var/lib/dpkg/status").is_file():
        root = AptRoot(root_path)
    else:
        if root_path.exists():
            shutil.rmtree(root_path)
        root = make_root(root_path, [repository.sources_line()])
        root.refresh_lists()
    return DemoApt(
        root=root.path,
        repository=repository,
        allowed_packages=("cowsay", "cowsay-data", "hello-iot"),
        example_document={"jobType": "APT_UPDATE", "aptPackageName": "cowsay"},
    )


def _stanzas(text: str) -> List[Dict[str, str]]:
    stanzas: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line
        elif ":" in line:
            last, value = line.split(":", 1)
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _run(
    command: Sequence[str],
    *,
    check: bool = True,
    cwd: Optional[os.PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    input_text: Optional[str] = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env=None if env is None else dict(env),
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-10:]
        raise AptRepoError(
            f"{' '.join(command)} exited {result.returncode}: " + " | ".join(output)
        )
    return result


def _update_lists(root: str) -> int:
    """``update ROOT``: refresh ROOT's package lists with python-apt (a child process)."""
    import apt

    cache = apt.Cache(rootdir=root)
    cache.update()
    stamp = Path(root) / "var/lib/apt/periodic/update-success-stamp"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m local_jobs.apt_repo update ROOT`` or ``demo FOLDER``."""
    parser = argparse.ArgumentParser(prog="python -m local_jobs.apt_repo")
    commands = parser.add_subparsers(dest="command", required=True)
    update = commands.add_parser("update", help="refresh a throwaway root's package lists")
    update.add_argument("root")
    demo = commands.add_parser("demo", help="build the demo repository and root in FOLDER")
    demo.add_argument("folder")
    args = parser.parse_args(argv)
    if args.command == "update":
        return _update_lists(args.root)
    setup = demo_setup(args.folder)
    print(f"root_dir = {setup.root}\nallowed_packages = {', '.join(setup.allowed_packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
