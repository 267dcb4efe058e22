"""Local disk or NFS: files named by their real path, published by hard link.

A hard link never replaces: ``link(2)`` fails with ``EEXIST`` if the name is taken, atomically,
on local file systems and on NFS alike. Where the file system can (Linux's ``O_TMPFILE``:
ext4, XFS, Btrfs, tmpfs), a dump's file has no name until that link, so nothing is staged and
a writer that dies leaves nothing; elsewhere (NFS) it is staged under a random name first.
Where a file system has no hard links (some FUSE, SMB or object-store mounts), the publish
falls back to an existence check and a rename, and a warning says that write-once is not
enforced there: a writer whose rename comes between another's check and rename can replace
that other's file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import shutil
import stat
from datetime import datetime
from typing import Any

import luigi
import luigi.format
from gokart.zip_client import ZipClient, _unzip_file

from locked_targets.errors import CommitRefused
from locked_targets.process_state import Once
from locked_targets.settings import Settings
from locked_targets.storage.base import DumpAhead, DumpInto, StorageKind, Write
from locked_targets.storage.commit import before_commit
from locked_targets.storage.staging import refused_if_cleared, staging_area
from locked_targets.storage.write_once import PublishedUnlessRaised, WriteOnceFile

logger = logging.getLogger(__name__)

# errno values of link(2) on a file system that has no hard links (ENOTSUP is EOPNOTSUPP on Linux).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})
# Each file system without hard links (by st_dev) is named once per process.
_warned_devices = Once()
# Linux names the path of an open file in /proc/self/fd: there, the kernel resolves a directory
# in three system calls, where os.path.realpath makes one lstat per component of the path.
_KERNEL_NAMES_OPEN_FILES = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
# O_TMPFILE makes a file without a name; /proc names it, for link(2) to give it one.
_MAKES_UNNAMED_FILES = _KERNEL_NAMES_OPEN_FILES and hasattr(os, "O_TMPFILE")
# errno values of open(O_TMPFILE) where the file system (NFS, most FUSE) or the kernel cannot.
_NO_UNNAMED_FILES = frozenset({errno.EOPNOTSUPP, errno.EISDIR})


class LocalStorage(StorageKind):
    """Files on a local or network file system, written to a temporary file and linked into place."""

    name = "local"
    key_prefix_setting = "local_key_prefix"

    def identity(self, path: str) -> str:
        """The real path: every name of a file (through symbolic links too) shares one lock."""
        return real_path(path)

    def file_system_target(
        self, path: str, file_format: luigi.format.Format, settings: Settings
    ) -> luigi.target.FileSystemTarget:
        return WriteOnceLocalTarget(path, format=file_format)  # type: ignore[no-untyped-call]

    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        return LocalZipArchive(path, temporary_directory)

    def dumping_ahead(
        self, target: luigi.target.FileSystemTarget, write: Write, dump_into: DumpInto
    ) -> DumpAhead:
        """Where the kernel makes unnamed files, a dump writes its whole file while its lock is asked
        for (``WrittenAhead``): making a file alone costs the file system about as long as Redis
        takes to answer on loopback, and serializing an object can outlast a far Redis's answer."""
        if _MAKES_UNNAMED_FILES and isinstance(target, WriteOnceLocalTarget):
            return WrittenAhead(target, write, dump_into)
        return super().dumping_ahead(target, write, dump_into)

    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        return datetime.fromtimestamp(os.path.getmtime(path))


def real_path(path: str) -> str:
    """``os.path.realpath(path)``: absolute, every symbolic link resolved, a missing tail kept as written.

    On Linux, for a path without ``..`` in an existing directory, a few µs whatever its depth:
    the kernel names the directory, and only the last component is checked for a link. Any
    other path takes ``os.path.realpath``, which gives the same answer more slowly.
    """
    if not _KERNEL_NAMES_OPEN_FILES or os.pardir in path:
        return os.path.realpath(path)  # ".." after a link leads to the link target's parent
    directory, _, name = os.path.abspath(path).rpartition(os.sep)
    real_directory = _kernel_name_of_directory(directory or os.sep)
    if real_directory is None:
        return os.path.realpath(path)
    real = os.path.join(real_directory, name)
    try:
        is_link = stat.S_ISLNK(os.lstat(real).st_mode)
    except OSError:  # missing: a file not dumped yet keeps its name
        is_link = False
    return os.path.realpath(real) if is_link else real


def _kernel_name_of_directory(directory: str) -> str | None:
    """The real path of ``directory`` as the kernel names it; None if it does not exist or cannot say."""
    try:
        handle = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        name = os.readlink(_name_of_open_file(handle))
    except OSError:
        return None
    finally:
        os.close(handle)
    # Not a plain absolute path: removed meanwhile ("... (deleted)"), or outside this process's root.
    return name if name.startswith(os.sep) and not name.endswith(" (deleted)") else None


def link_into_place(source: str, destination: str) -> None:
    """Publish ``source`` as ``destination`` unless that name is taken; the caller removes ``source``.

    ``CommitRefused`` if ``destination`` exists, unless it is ``source`` itself (an NFS client
    can retransmit a ``link`` whose reply was lost, and hear ``EEXIST`` from its own success).
    """
    before_commit()
    try:
        with refused_if_cleared(destination, os.path.lexists):
            os.link(source, destination)
    except FileExistsError as error:
        if not _same_file(source, destination):
            raise CommitRefused(destination) from error
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        _warn_write_once_not_enforced(destination, error)
        if os.path.lexists(destination):
            raise CommitRefused(destination) from error
        os.rename(source, destination)


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except FileNotFoundError:
        return False


def _warn_write_once_not_enforced(destination: str, error: OSError) -> None:
    device = os.stat(_directory_of(destination)).st_dev
    if not _warned_devices.first_time(device):
        return
    logger.warning(
        "the file system of %s has no hard links (%s): files there are published by rename after "
        "an existence check, so write-once is not enforced (a stale writer can replace a file)",
        destination,
        error,
    )


class WriteOnceLocalTarget(luigi.LocalTarget):
    """A local file target whose written file never replaces an existing one (``CommitRefused`` instead)."""

    def open(self, mode: str = "r") -> Any:
        if mode.replace("b", "").replace("t", "") != "w":
            return super().open(mode)  # type: ignore[no-untyped-call]
        self.makedirs()  # type: ignore[no-untyped-call]
        return self.format.pipe_writer(write_once_local_file(self.path))


class WrittenAhead(DumpAhead):
    """A local dump written ahead of its lock into an unnamed file (``O_TMPFILE``), linked under it.

    No one can see or reach an unnamed file before its link, so writing it needs no lock; only
    the link (the commit) does, after the dump's checks. A dump that skips (the file exists) or
    fails lets go of the file, and the kernel frees it; a failure of the write itself is raised
    under the lock, as if written there (a dump that skips never raises it). Nothing is written
    ahead where the file exists already (the dump is bound to skip), nor where the file system
    makes no unnamed files (NFS): the write stages a named file under the lock, as a staging
    area is for lock holders.
    """

    def __init__(self, target: WriteOnceLocalTarget, write: Write, dump_into: DumpInto) -> None:
        super().__init__(write)
        self._target = target
        self._dump_into = dump_into
        self._file: UnnamedWriteOnceFile | None = None
        self._writer: Any = None
        self._failure: Exception | None = None
        self.meanwhile = self._write_ahead

    def _write_ahead(self) -> None:
        if os.path.lexists(self._target.path):  # the dump will most likely skip: nothing to write
            return
        try:
            self._target.makedirs()  # type: ignore[no-untyped-call]
            self._file = UnnamedWriteOnceFile(
                self._target.path, _directory_of(self._target.path), published_at_close=False
            )
        except OSError:  # left to the write under the lock, which meets the error then
            return
        try:
            # Kept until the end: luigi's text wrapper lets go of the file under it when collected.
            self._writer = self._target.format.pipe_writer(self._file)
            with self._writer as writer:
                self._dump_into(writer)
        except Exception as error:
            # Raised by ``publish``, under the lock, as gokart's write raises it: not if the dump
            # finds the file there and skips, nor as a failure to acquire.
            self._failure = error
            self._file.abandon()

    def publish(self) -> None:
        if self._failure is not None:
            raise self._failure
        file = self._file
        if file is None or not file.written:  # nothing written ahead: the lock was taken ahead, say
            super().publish()
            return
        # Made again if it was removed while the dump waited (the link is by absolute path).
        if not os.path.isdir(_directory_of(file.path)):
            self._target.makedirs()  # type: ignore[no-untyped-call]
        file.publish()

    def let_go(self) -> None:
        if self._file is not None:
            self._file.abandon()


def _directory_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def write_once_local_file(path: str) -> io.BufferedWriter:
    """A file being written for ``path``, linked into place when closed: unnamed until then where it can."""
    # The file sits in the final one's directory: a hard link cannot cross file systems.
    directory = _directory_of(path)
    if _MAKES_UNNAMED_FILES:
        try:
            return UnnamedWriteOnceFile(path, directory)
        except OSError as error:
            if error.errno not in _NO_UNNAMED_FILES:
                raise
    return WriteOnceFile(path, link_into_place, LocalStorage(), directory)


class UnnamedWriteOnceFile(PublishedUnlessRaised):
    """A file written without a name in ``directory`` (``O_TMPFILE``), linked as ``path`` when closed.

    Nothing is staged, so nothing is cleared: the kernel frees an unnamed file with its last
    descriptor, when its writer closes it after raising, or dies, or is collected unclosed.
    No other writer can reach it, so a stale writer can only publish its own whole file.
    """

    _directory: int | None = None
    """The final file's directory, open while the file is: None once let go of (or never opened)."""
    _close_descriptor = staticmethod(os.close)  # still there when a file is collected at exit
    written = False
    """Closed by its writer, unpublished: a file ``published_at_close`` False waits for ``publish``."""

    def __init__(self, path: str, directory: str, *, published_at_close: bool = True) -> None:
        """``published_at_close`` False: a file written ahead of its lock, which ``close`` keeps
        (flushed, unpublished) for ``publish``, called under the lock."""
        self.path = path
        self._published_at_close = published_at_close
        directory_descriptor = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            descriptor = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o666, dir_fd=directory_descriptor)
            try:
                raw = io.FileIO(descriptor, "w")
            except BaseException:
                os.close(descriptor)
                raise
        except BaseException:
            os.close(directory_descriptor)
            raise
        # gokart's parquet and feather processors write by name: this one opens the same file.
        raw.name = _name_of_open_file(descriptor)
        super().__init__(raw)
        self._directory = directory_descriptor

    def close(self) -> None:
        """Publish the file create-if-absent (``CommitRefused`` if the name is taken), then let go of
        it; or, if not ``published_at_close``, keep it for ``publish``."""
        if self.closed:
            return
        if not self._published_at_close:
            self.flush()
            self.written = True
            return
        self.publish()

    def publish(self) -> None:
        """``close``'s publication, of a file written ahead too: then let go of it, whatever happened."""
        try:
            self.flush()
            self._publish()
        finally:
            self.abandon()

    def __del__(self) -> None:
        """A file collected unclosed is never published: only ``close`` publishes."""
        self.abandon()

    def _publish(self) -> None:
        assert self._directory is not None  # not closed: the directory is open
        before_commit()
        try:
            # The name is absolute, so linkat(2) ignores the directory descriptor and links
            # where the path names now, as a named file's link does. The descriptor is there
            # because only with one does CPython call linkat(2) with AT_SYMLINK_FOLLOW, which
            # links the open file; plain link(2) would try to link the /proc entry itself.
            os.link(self.name, os.path.abspath(self.path), dst_dir_fd=self._directory)
        except FileExistsError as error:
            raise CommitRefused(self.path) from error
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            self._publish_a_named_copy()

    def _publish_a_named_copy(self) -> None:
        """Publish where the file system makes unnamed files but links none: by a staged, named copy,
        the guard asked again once the copy is whole (copying a large file can outlast a lease)."""
        directory = _directory_of(self.path)
        with staging_area(directory, self.path, LocalStorage(), "publish") as staging:
            copy = staging.new_path(".tmp")
            try:
                with open(self.name, "rb") as unnamed, open(copy, "wb") as named:
                    shutil.copyfileobj(unnamed, named)
                link_into_place(copy, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(copy)

    def abandon(self) -> None:
        directory, self._directory = self._directory, None
        if directory is None:  # let go of already, or never fully opened
            return
        try:
            self.raw.close()
        finally:
            self._close_descriptor(directory)


def _name_of_open_file(descriptor: int) -> str:
    return f"/proc/self/fd/{descriptor}"


class LocalZipArchive(ZipClient):
    """A directory zipped into one local file that appears whole or not at all, and never over another.

    gokart's ``LocalZipClient`` writes the archive in place (a crash leaves half a zip)
    and its ``remove`` leaves the file behind (it calls ``rmtree`` on a file).
    """

    def __init__(self, file_path: str, temporary_directory: str) -> None:
        self._file_path = file_path
        self._temporary_directory = temporary_directory

    def exists(self) -> bool:
        return os.path.exists(self._file_path)

    def make_archive(self) -> None:
        directory = _directory_of(self._file_path)
        os.makedirs(directory, exist_ok=True)
        extension = os.path.splitext(self._file_path)[1]
        with staging_area(directory, self._file_path, LocalStorage(), "publish") as staging:
            archive = shutil.make_archive(
                base_name=staging.new_path(), format=extension[1:], root_dir=self._temporary_directory
            )
            try:
                link_into_place(archive, self._file_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(archive)

    def unpack_archive(self) -> None:
        _unzip_file(fp=self._file_path, extract_dir=self._temporary_directory)

    def remove(self) -> None:
        os.remove(self._file_path)

    @property
    def path(self) -> str:
        return self._file_path
