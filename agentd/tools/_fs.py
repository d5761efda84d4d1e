"""Paths confined to the workspace: every path is walked from the root's file descriptor.

A path is never handed to the kernel whole. The root is opened as a directory,
and each component is opened relative to its parent's descriptor with
O_NOFOLLOW, so no symlink is followed by the kernel: a symlink is read and its
target walked here, within the same confinement, and one that leaves the root
is refused. What is read or written is reached through the descriptors of that
walk, so a directory or link swapped in after it was checked cannot redirect
the call. Writes go to a temporary file beside the target and are renamed over
it, so no reader sees half a file.

Everything here blocks; the tools call it in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import Literal

import attrs
import pathspec

from agentd.atomic_write import replace_in_dir

from ._base import ToolError

__all__ = [
    "OPEN_ANY",
    "Entry",
    "Ignores",
    "Opened",
    "Target",
    "existing_mode",
    "open_path",
    "read_at",
    "read_ignore_chain",
    "replace_file",
    "MissingDirectory",
    "resolve_target",
    "tree",
]

# Symlinks followed in one path at most, as the kernel's own ELOOP bound.
MAX_SYMLINK_HOPS = 40
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone left in the workspace must not hang the call.
OPEN_ANY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# .gitignore files larger than this are not read (nobody writes one; a hostile one costs memory).
_MAX_IGNORE_BYTES = 1024 * 1024


def _names(path: str) -> list[str]:
    return [name for name in path.split("/") if name not in ("", ".")]


def _below_root(root: str, path: str) -> list[str] | None:
    """An absolute path's names below the root, or None when it is elsewhere.

    The user may name the root through a symlink of their own (the workspace
    was opened as ~/proj, a link to /data/proj): a prefix of the path that is
    the root's very directory counts as the root.
    """
    names = _names(path)
    root_names = _names(root)
    if names[: len(root_names)] == root_names:
        return names[len(root_names) :]
    try:
        root_stat = os.stat(root)
    except OSError:
        return None
    for i in range(1, len(names) + 1):
        try:
            prefix = os.stat("/" + "/".join(names[:i]))
        except OSError:
            return None
        if os.path.samestat(prefix, root_stat):
            return names[i:]
    return None


def _open_root(root: str) -> int:
    try:
        return os.open(root, _DIR)
    except OSError as exc:
        raise ToolError(f"cannot open the workspace root {root}: {exc.strerror}") from None


class _Walk:
    """One path's walk down from the root: the open directories, and their names."""

    def __init__(self, root: str, shown: str) -> None:
        self.root = root
        self.shown = shown
        self.root_fd = _open_root(root)
        self.dirs: list[tuple[int, str]] = []
        self.hops = 0

    @property
    def fd(self) -> int:
        return self.dirs[-1][0] if self.dirs else self.root_fd

    def relpath(self, name: str | None = None) -> str:
        names = [n for _, n in self.dirs] + ([name] if name else [])
        return "/".join(names) or "."

    def close(self) -> None:
        for fd, _ in self.dirs:
            os.close(fd)
        self.dirs.clear()
        os.close(self.root_fd)

    def up(self) -> None:
        if not self.dirs:
            raise ToolError(f"{self.shown} is outside the workspace: '..' climbs above its root")
        fd, _ = self.dirs.pop()
        os.close(fd)

    def is_link(self, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def link(self, name: str, todo: list[str]) -> list[str]:
        """The names left to walk once the symlink `name` in the current directory is followed."""
        self.hops += 1
        if self.hops > MAX_SYMLINK_HOPS:
            raise ToolError(f"{self.shown}: too many levels of symbolic links")
        where = self.relpath(name)
        try:
            target = os.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            raise ToolError(f"{self.shown}: cannot read the symlink {where}: {exc.strerror}") from None
        if not target.startswith("/"):
            # Said here, by the link's name; the walk would refuse it anyway, at the '..' too many.
            depth = len(self.dirs)
            for part in _names(target):
                depth += -1 if part == ".." else 1
                if depth < 0:
                    raise ToolError(f"{self.shown}: the symlink {where} points outside the workspace ({target})")
            return _names(target) + todo
        rest = _below_root(self.root, target)
        if rest is None:
            raise ToolError(f"{self.shown}: the symlink {where} points outside the workspace ({target})")
        for fd, _ in self.dirs:
            os.close(fd)
        self.dirs.clear()
        return rest + todo

    def failed(self, name: str, exc: OSError) -> ToolError:
        where = self.relpath(name)
        if exc.errno == errno.ENOENT:
            return Missing(
                f"{self.shown} does not exist" + (f" ({where} is missing)" if where != self.shown else ""), where
            )
        if exc.errno == errno.ENOTDIR:
            return ToolError(f"{self.shown}: {where} is not a directory")
        if exc.errno == errno.EACCES:
            return ToolError(f"{self.shown}: permission denied ({where})")
        return ToolError(f"{self.shown}: {where}: {exc.strerror}")

    def descend(self, todo: list[str], *, create: bool = False) -> None:
        """Walk `todo` down to a directory, each component opened below the last."""
        while todo:
            name = todo.pop(0)
            if name == "..":
                self.up()
                continue
            try:
                fd = os.open(name, _DIR, dir_fd=self.fd)
            except OSError as exc:
                # Linux says ENOTDIR, not ELOOP, for a symlink opened with O_DIRECTORY.
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self.is_link(name):
                    todo[:0] = self.link(name, [])
                    continue
                if exc.errno == errno.ENOENT and create:
                    try:
                        os.mkdir(name, 0o777, dir_fd=self.fd)
                    except FileExistsError:
                        pass  # made meanwhile: open what is there, by the same rules
                    except OSError as mkdir_exc:
                        raise self.failed(name, mkdir_exc) from None
                    todo.insert(0, name)
                    continue
                raise self.failed(name, exc) from None
            self.dirs.append((fd, name))


def _split(root: str, path: str) -> list[str]:
    if "\0" in path:
        raise ToolError("the path contains a NUL character")
    if path.startswith("/"):
        rest = _below_root(root, path)
        if rest is None:
            raise ToolError(f"{path} is outside the workspace ({root})")
        return rest
    return _names(path)


@attrs.frozen
class Opened:
    fd: int
    # Relative to the root, symlinks resolved, "/" separators; "." for the root.
    relpath: str
    stat: os.stat_result


def open_path(root: str, path: str) -> Opened:
    """Open what `path` names (a file or a directory), confined to the root. The caller closes `fd`."""
    walk = _Walk(root, path or ".")
    try:
        todo = _split(root, path)
        while True:
            # Walk to the parent of the last name, then open the last name itself.
            while todo and todo[-1] == "..":
                walk.descend(todo)
            if not todo:
                fd = os.dup(walk.fd)
                return Opened(fd, walk.relpath(), os.fstat(fd))
            last = todo.pop()
            walk.descend(todo)
            try:
                fd = os.open(last, OPEN_ANY, dir_fd=walk.fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    todo = walk.link(last, [])
                    continue
                raise walk.failed(last, exc) from None
            return Opened(fd, walk.relpath(last), os.fstat(fd))
    finally:
        walk.close()


@attrs.frozen
class Target:
    """Where a write goes: a name in a directory held open. The caller closes `dir_fd`."""

    dir_fd: int
    name: str
    # Relative to the root, symlinks resolved, "/" separators.
    relpath: str

    def close(self) -> None:
        os.close(self.dir_fd)


class Missing(ToolError):
    """A path, or a directory on the way to it, does not exist (`where`: the first missing one)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


class MissingDirectory(ToolError):
    """A write's directory does not exist, and was not to be made; `relpath` is the file it would write."""

    def __init__(self, message: str, relpath: str) -> None:
        super().__init__(message)
        self.relpath = relpath


def resolve_target(root: str, path: str, *, create_dirs: bool) -> Target:
    """The directory and name a write to `path` replaces, symlinks inside the workspace followed."""
    walk = _Walk(root, path)
    try:
        todo = _split(root, path)
        while True:
            while todo and todo[-1] == "..":
                walk.descend(todo)
            if not todo:
                raise ToolError(f"{path or '.'} is a directory, not a file")
            last = todo.pop()
            try:
                walk.descend(todo, create=create_dirs)
            except Missing as exc:
                # Not made here: say which file the write would make, below the missing directory.
                raise MissingDirectory(str(exc), "/".join([exc.where, *todo, last])) from None
            try:
                os.readlink(last, dir_fd=walk.fd)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise walk.failed(last, exc) from None
                # Not a symlink, or not there yet: this is the name to write.
                return Target(os.dup(walk.fd), last, walk.relpath(last))
            todo = walk.link(last, [])
    finally:
        walk.close()


def existing_mode(target: Target) -> int | None:
    """The permission bits of the file at the target, None when there is none."""
    try:
        st = os.stat(target.name, dir_fd=target.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{target.relpath} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{target.relpath} is not a regular file")
    return stat.S_IMODE(st.st_mode)


def replace_file(target: Target, data: bytes, mode: int | None) -> None:
    """Put `data` at the target in one rename: a reader sees the old file or the new one, never half."""
    try:
        replace_in_dir(target.dir_fd, target.name, data, mode)
    except OSError as exc:
        raise ToolError(f"cannot write {target.relpath}: {exc.strerror}") from None


def read_at(target: Target, max_bytes: int) -> bytes | None:
    """The file at the target (None when there is none), refusing one larger than `max_bytes`."""
    try:
        fd = os.open(target.name, OPEN_ANY, dir_fd=target.dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ToolError(f"{target.relpath} became a symlink during the call") from None
        raise ToolError(f"cannot read {target.relpath}: {exc.strerror}") from None
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{target.relpath} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{target.relpath} is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ToolError(f"{target.relpath} is larger than {max_bytes} bytes")
    return data


class Ignores:
    """The .gitignore files that apply where a walk is: each applies below its own directory."""

    def __init__(self) -> None:
        # Per file, its patterns, each with the directory its paths are taken
        # from: the file's own, or the walk's start (see push).
        self._levels: list[list[tuple[pathspec.Pattern, str]]] = []

    def push(self, base: str, lines: list[str], *, start: str | None = None) -> None:
        """Add the patterns of the .gitignore in `base`.

        `start`: a directory below `base` the walk begins in, asked for by name
        though a pattern here ignores it (`build/` for `build/x`). Such a
        pattern, read as pathspec reads it, matches all that is inside; ripgrep,
        which walks a path it is given, matches each path by its own name. So
        such a pattern is matched against paths from `start` on: `build/` still
        ignores a `build/x/build/`, not `build/x/y.py`.
        """
        through = None if start is None else (start[len(base) + 1 :] if base else start) + "/"
        patterns: list[tuple[pathspec.Pattern, str]] = []
        for pattern in pathspec.GitIgnoreSpec.from_lines(lines).patterns:
            if pattern.include is None:
                continue
            if start is not None and through is not None and pattern.include and pattern.match_file(through):
                patterns.append((pattern, start))
            else:
                patterns.append((pattern, base))
        self._levels.append(patterns)

    def pop(self) -> None:
        self._levels.pop()

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        # git's rule: the deepest file that says anything about a path decides,
        # and within a file the last matching pattern ("!" re-includes).
        tail = "/" if is_dir else ""
        for patterns in reversed(self._levels):
            decision: bool | None = None
            for pattern, origin in patterns:
                sub = (relpath[len(origin) + 1 :] if origin else relpath) + tail
                if pattern.match_file(sub) is not None:
                    decision = pattern.include
            if decision is not None:
                return decision
        return False


def _read_ignore(dir_fd: int) -> list[str] | None:
    try:
        fd = os.open(".gitignore", OPEN_ANY, dir_fd=dir_fd)
    except OSError:
        return None  # none, a symlink (not followed), or unreadable: nothing to honour
    with open(fd, "rb", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(_MAX_IGNORE_BYTES)
    return data.decode("utf-8", errors="replace").splitlines()


def read_ignore_chain(root: str, relpath: str) -> Ignores:
    """The .gitignore files of the root and of each directory down to `relpath` (excluded)."""
    ignores = Ignores()
    names = [] if relpath == "." else relpath.split("/")
    walk = _Walk(root, relpath)
    try:
        for i in range(len(names)):
            lines = _read_ignore(walk.fd)
            if lines:
                ignores.push("/".join(names[:i]), lines, start=relpath)
            walk.descend([names[i]])
    finally:
        walk.close()
    return ignores


EntryKind = Literal["dir", "file", "link", "other"]


@attrs.frozen
class Entry:
    # Relative to the root, "/" separators.
    relpath: str
    name: str
    # 1 for the entries of the directory the walk started in.
    depth: int
    kind: EntryKind
    # The directory holding it, open while the walk is at this entry.
    dir_fd: int


def _kind(entry: os.DirEntry[str]) -> EntryKind:
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        pass
    return "other"


def tree(dir_fd: int, relpath: str, ignores: Ignores, max_depth: int | None = None, depth: int = 1) -> Iterator[Entry]:
    """The entries below an open directory, depth first, names in code point order (ripgrep's
    `--sort path`), .git and what .gitignore files exclude left out, symlinks not followed."""
    prefix = "" if relpath == "." else relpath + "/"
    lines = _read_ignore(dir_fd)
    if lines:
        ignores.push("" if relpath == "." else relpath, lines)
    try:
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(((e.name, _kind(e)) for e in it), key=lambda pair: pair[0])
        except OSError:
            return
        for name, kind in entries:
            path = prefix + name
            if name == ".git" or ignores.ignored(path, kind == "dir"):
                continue
            yield Entry(path, name, depth, kind, dir_fd)
            if kind == "dir" and (max_depth is None or depth < max_depth):
                try:
                    sub = os.open(name, _DIR, dir_fd=dir_fd)
                except OSError:
                    continue  # swapped for something else, or unreadable: not ours to list
                try:
                    yield from tree(sub, path, ignores, max_depth, depth + 1)
                finally:
                    os.close(sub)
    finally:
        if lines:
            ignores.pop()
