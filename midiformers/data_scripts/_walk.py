"""Finding the files of a folder or glob pattern safely, whatever its symbolic links do.

``glob.glob("x/**", recursive=True)`` and ``os.walk(followlinks=True)`` follow a link to a
parent folder round and round: the same file comes back dozens of times (and copies of one
piece land in the training and the test split), and two such links never finish. The walk
here follows links (folders and files may live elsewhere: it is the user's own data) but:

* walks each real folder once per pattern position (keyed by ``(st_dev, st_ino)``), and
  never follows a link to a folder that contains the root (it would walk the root again
  and everything beside it), so any link structure ends;
* keeps each real file once (keyed by ``(st_dev, st_ino)``; hard links are the same file),
  under the name that crosses the fewest links, then the first in sorted order, and reports
  the other names as duplicates;
* reports dangling links, link loops, unreadable folders and special files (a FIFO named
  ``x.mid`` would block a reader forever) instead of ignoring them;
* skips hidden names (starting with ``.``, like macOS' ``._x.mid`` resource forks), as
  ``datasets``' ``imagefolder`` does, unless a pattern component asks for them.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import heapq
import os
import stat
from dataclasses import dataclass, field
from typing import NamedTuple

_ANY = None  # the state of a walk without a pattern: everything matches


class FoundFile(NamedTuple):
    """A regular file found by :func:`find_files` (a tuple: there is one per file)."""

    path: str
    relative: str  # to the walk's root, with "/" separators
    size: int


@dataclass(frozen=True)
class Problem:
    """An entry that looked like a wanted file but cannot be used."""

    name: str  # relative to the root, with "/" separators
    reason: str
    category: str


@dataclass
class WalkResult:
    """What :func:`find_files` found under ``root``."""

    root: str
    files: list[FoundFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept) names
    folders_walked: int = 0
    folder_links_not_followed: int = 0  # links to a folder walked already (loops, repeats)


class _Pattern:
    """Glob path components (``*``, ``?``, ``[...]``, ``**``) matched one name at a time.

    The states are the sets of component indices reached so far (a small NFA), so ``**``
    costs no backtracking and a folder can be pruned as soon as no component can match.
    """

    def __init__(self, components: list[str]):
        self.components = components
        self.end = len(components)

    def start(self) -> frozenset[int]:
        return self._closure({0})

    def _closure(self, states: set[int]) -> frozenset[int]:
        todo = list(states)
        result = set(states)
        while todo:
            index = todo.pop()
            if index < self.end and self.components[index] == "**" and index + 1 not in result:
                result.add(index + 1)
                todo.append(index + 1)
        return frozenset(result)

    def advance(self, states: frozenset[int], name: str) -> frozenset[int]:
        hidden = name.startswith(".")
        reached = set()
        for index in states:
            if index >= self.end:
                continue
            component = self.components[index]
            if component == "**":
                if not hidden:
                    reached.add(index)
            elif (not hidden or component.startswith(".")) and fnmatch.fnmatch(name, component):
                reached.add(index + 1)
        return self._closure(reached)

    def can_continue(self, states: frozenset[int]) -> bool:
        return any(index < self.end for index in states)

    def matched(self, states: frozenset[int]) -> bool:
        return self.end in states


def split_pattern(pattern: str) -> tuple[str, list[str]]:
    """The folder a glob pattern starts from (its leading components without wildcards),
    and the remaining components."""
    head = pattern.rstrip("/" + os.sep) or pattern
    components: list[str] = []
    while glob.has_magic(head):
        head, tail = os.path.split(head)
        if tail:
            components.insert(0, tail)
        if not head or head == os.path.dirname(head):
            break
    return head or ".", components


def find_files(
    location: str, extensions: tuple[str, ...], pattern: list[str] | None = None
) -> WalkResult:
    """Every regular file under the folder ``location`` whose name ends with one of
    ``extensions`` (case-insensitive) and, when given, whose path relative to ``location``
    matches the glob components ``pattern``. Follows links; terminates on any link structure;
    each real file is listed once (sorted by relative name)."""
    matcher = _Pattern(pattern) if pattern is not None else None
    result = WalkResult(root=location)
    start = matcher.start() if matcher is not None else _ANY
    # (links crossed, depth, relative parts, order, path, pattern states): real paths first.
    queue: list[tuple[int, int, tuple[str, ...], int, str, frozenset[int] | None]] = [
        (0, 0, (), 0, location, start)
    ]
    pushed = 0
    root_real = os.path.realpath(location)
    walked: set[tuple[int, int, frozenset[int] | None]] = set()
    candidates: list[tuple[int, int, tuple[str, ...], int] | None] = []
    aliased = False  # whether a file may have been reached under two names
    while queue:
        links, _depth, parts, _order, folder, states = heapq.heappop(queue)
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino, states)
            if key in walked:
                result.folder_links_not_followed += 1
                continue
            walked.add(key)
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            name = "/".join(parts) or "."
            result.problems.append(
                Problem(name, f"cannot list the folder ({error.strerror or error})", "unreadable")
            )
            continue
        result.folders_walked += 1
        for entry in entries:
            relative = parts + (entry.name,)
            is_link = entry.is_symlink()
            if entry.name.startswith(".") and matcher is None:
                continue
            next_states = matcher.advance(states, entry.name) if matcher is not None else _ANY
            if _is_dir(entry):
                if is_link and _contains(os.path.realpath(entry.path), root_real):
                    result.folder_links_not_followed += 1  # a loop: it leads back above us
                elif matcher is None or matcher.can_continue(next_states):
                    pushed += 1
                    item = (
                        links + is_link,
                        len(relative),
                        relative,
                        pushed,
                        entry.path,
                        next_states,
                    )
                    heapq.heappush(queue, item)
                continue
            wanted = entry.name.lower().endswith(extensions) and (
                matcher is None or matcher.matched(next_states)
            )
            if not wanted:
                maybe_folder = "." not in entry.name and (
                    matcher is None or matcher.can_continue(next_states)
                )
                if is_link and maybe_folder and not os.path.exists(entry.path):
                    # A broken link without an extension may well have been a folder of music.
                    result.problems.append(link_problem(entry.path, "/".join(relative)))
                continue
            try:
                info = os.stat(entry.path)
            except OSError:
                result.problems.append(link_problem(entry.path, "/".join(relative)))
                continue
            if not stat.S_ISREG(info.st_mode):
                result.problems.append(
                    Problem("/".join(relative), "not a regular file", "not a regular file")
                )
                continue
            aliased = aliased or links + is_link > 0 or info.st_nlink > 1
            candidates.append((links + is_link, len(relative), relative, info.st_size))
    candidates.sort()
    # Without a link crossed nor a hard link, no file can have been reached twice: only then
    # is every file's (device, inode) needed (stat again, rather than kept for every file)
    kept: dict[tuple[int, int], str] | None = {} if aliased else None
    for index, (_links, _depth, relative, size) in enumerate(candidates):
        candidates[index] = None  # freed as we go: a folder may hold millions of files
        name = "/".join(relative)
        path = os.path.join(location, *relative)
        if kept is not None:
            try:
                info = os.stat(path)
            except OSError:  # gone since the walk
                result.problems.append(link_problem(path, name))
                continue
            key = (info.st_dev, info.st_ino)
            if key in kept:
                result.duplicates.append((name, kept[key]))
                continue
            kept[key] = name
        result.files.append(FoundFile(path, name, size))
    del candidates, kept
    result.files.sort(key=lambda found: found.relative)
    result.problems.sort(key=lambda problem: problem.name)
    result.duplicates.sort()
    return result


def _contains(folder: str, path: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def link_problem(path: str, name: str) -> Problem:
    """Why ``path`` (a link, usually) cannot be opened."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return Problem(name, "symbolic link loop (the link leads back to itself)", "link loop")
        if error.errno == errno.ENOENT and os.path.islink(path):
            target = os.readlink(path)
            return Problem(
                name,
                f"dangling symbolic link (its target {target!r} does not exist)",
                "dangling link",
            )
        return Problem(name, f"cannot be opened ({error.strerror or error})", "unreadable")
    return Problem(name, "cannot be opened", "unreadable")
