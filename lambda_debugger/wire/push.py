"""Live code push: the developer's local edits, run in the debugged child.

With ``attach --push LOCAL_DIR`` the bridge's options request asks for the
Lambda side's manifest: the Python source files under the task root with
their SHA-256 (:func:`manifest`). The answer comes back in the options
response. The bridge then sends :data:`PUSH_COMMAND` with the local files
that differ or are new (:func:`plan`), and the child runs them under their
deployed file names before the handler starts. :data:`PUSHED_EVENT` tells
the bridge what was applied. :data:`RESTART_COMMAND` ends the child and runs
the handler again in a fresh one, with the files pushed again and the IDE's
configuration replayed to the new debugpy.

Only ``.py`` files travel. Installed dependencies (directories a
``*.dist-info`` RECORD names, virtual environments) are neither listed nor
pushed: a dependency change needs a deploy.
"""

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

#: The Lambda side's answer to a push, and what each file became.
PUSHED_EVENT = "lambdaDebugger/pushed"

#: The bridge's request carrying changed files, before the handler starts.
PUSH_COMMAND = "lambdaDebugger/push"

#: The bridge's request to run the handler again in a fresh child.
RESTART_COMMAND = "lambdaDebugger/restart"

#: A push holds at most this many files and bytes of source.
MAX_FILES = 2000
MAX_BYTES = 5 * 1024 * 1024

#: A manifest lists at most this many files, in at most about this many
#: bytes of JSON; beyond, it says it is partial (and the files it leaves
#: out are pushed even when unchanged).
MAX_MANIFEST_FILES = 5000
MAX_MANIFEST_BYTES = 512 * 1024

#: A restart is refused with less than this left before the Lambda timeout.
MIN_RESTART_S = 3.0

#: Directory names never searched for source files.
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})


class PushRefused(ValueError):
    """A push that breaks a limit or names a path it may not."""


@dataclass
class PushedFile:
    """One file of a push.

    Attributes:
        path: relative to the task root, with ``/`` separators.
        source: the file's bytes.
        sha256: their SHA-256, hex.
    """

    path: str
    source: bytes
    sha256: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: str) -> str:
    """A file's SHA-256, read in pieces (a large generated module must not
    cost the Lambda process its size in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(piece)
    return digest.hexdigest()


def short(digest: str) -> str:
    """The first 12 hex digits, for log lines."""
    return digest[:12]


def describe(entry: dict) -> str:
    """One entry of a push report (``path``, ``sha256``, ``status``,
    ``message``) as a line for the function's log and the developer."""
    line = "%s (sha256 %s): %s" % (entry.get("path"), short(str(entry.get("sha256"))), entry.get("status"))
    return line + ("; " + str(entry["message"]) if entry.get("message") else "")


def dependency_names(root: str) -> Set[str]:
    """Top-level names under ``root`` that belong to installed
    distributions (``pip install -t``): those a ``*.dist-info/RECORD`` or
    ``*.egg-info/top_level.txt`` names, and the metadata directories."""
    names: Set[str] = set()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return names
    for entry in entries:
        if not entry.is_dir() or not entry.name.endswith((".dist-info", ".egg-info")):
            continue
        names.add(entry.name)
        for listing in ("RECORD", "top_level.txt"):
            try:
                with open(os.path.join(entry.path, listing), encoding="utf-8", errors="replace") as f:
                    for line in f:
                        first = line.split(",", 1)[0].strip().replace("\\", "/").split("/", 1)[0]
                        if first and first not in ("..", "."):
                            names.add(first)
            except OSError:
                continue
    return names


def python_files(root: str, limit: int = MAX_MANIFEST_FILES) -> Tuple[Dict[str, str], bool]:
    """The ``.py`` files under ``root`` that are the function's own code:
    relative path -> absolute path, and whether the walk saw everything
    (False past ``limit`` files). Skips installed dependencies, virtual
    environments, hidden and cache directories."""
    found: Dict[str, str] = {}
    skip_top = dependency_names(root)
    for rel in _walk(root, "", skip_top):
        if len(found) >= limit:
            return found, False
        found[rel] = os.path.join(root, *rel.split("/"))
    return found, True


def _walk(root: str, prefix: str, skip_top: Set[str]) -> Iterator[str]:
    directory = os.path.join(root, *prefix.split("/")) if prefix else root
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name.startswith(".") or (not prefix and name in skip_top):
            continue
        rel = prefix + "/" + name if prefix else name
        try:
            if entry.is_dir(follow_symlinks=False):
                if name in SKIPPED_DIRS or os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                    continue
                yield from _walk(root, rel, skip_top)
            elif name.endswith(".py") and entry.is_file():
                yield rel
        except OSError:
            continue


def manifest(task_root: str) -> dict:
    """What the Lambda side runs: ``{"root", "files": {path: sha256},
    "complete"}`` for the function's own source files under ``task_root``."""
    files, complete = python_files(task_root)
    digests = {}
    size = 0
    for rel, path in files.items():
        size += len(rel) + 80  # its share of the answer's JSON
        if size > MAX_MANIFEST_BYTES:
            complete = False
            break
        try:
            digests[rel] = _file_sha256(path)
        except OSError:
            continue
    return {"root": task_root, "files": digests, "complete": complete}


def check_path(path: object) -> str:
    """``path`` if it is a relative ``.py`` path inside the task root.

    Raises:
        PushRefused: anything else (absolute, ``..``, not ``.py``, odd characters).
    """
    if not isinstance(path, str) or not path.endswith(".py") or len(path) > 1024:
        raise PushRefused("not a .py path: %r" % (path if not isinstance(path, str) else path[:200]))
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise PushRefused("not a relative path inside the task root: %r" % path[:200])
    return path


def encode_files(files: List[PushedFile]) -> List[dict]:
    """Files as JSON values: text when UTF-8, else base64."""
    out = []
    for f in files:
        try:
            out.append({"path": f.path, "sha256": f.sha256, "text": f.source.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"path": f.path, "sha256": f.sha256, "base64": base64.b64encode(f.source).decode("ascii")})
    return out


def decode_files(values: object) -> List[PushedFile]:
    """The files of a push request, checked against the limits.

    Raises:
        PushRefused: a limit broken, a bad path or a malformed entry.
    """
    if not isinstance(values, list):
        raise PushRefused("the push holds no file list")
    if len(values) > MAX_FILES:
        raise PushRefused("%d files is more than the %d a push may hold" % (len(values), MAX_FILES))
    files: List[PushedFile] = []
    total = 0
    seen: Set[str] = set()
    for value in values:
        if not isinstance(value, dict):
            raise PushRefused("a pushed file is not an object")
        path = check_path(value.get("path"))
        if path in seen:
            raise PushRefused("%s is pushed twice" % path)
        seen.add(path)
        try:
            if isinstance(value.get("text"), str):
                source = value["text"].encode("utf-8")
            elif isinstance(value.get("base64"), str):
                source = base64.b64decode(value["base64"], validate=True)
            else:
                raise PushRefused("%s has no content" % path)
        except (ValueError, UnicodeEncodeError) as exc:
            raise PushRefused("%s: unreadable content (%s)" % (path, exc)) from None
        total += len(source)
        if total > MAX_BYTES:
            raise PushRefused("the push is larger than %d MB" % (MAX_BYTES // (1024 * 1024)))
        files.append(PushedFile(path, source, sha256(source)))
    return files


@dataclass
class Plan:
    """What the bridge pushes: ``files`` that differ from the deployed code
    or are new; ``same`` counts the local files equal to the deployed ones."""

    files: List[PushedFile]
    same: int

    @property
    def size(self) -> int:
        return sum(len(f.source) for f in self.files)

    def describe(self) -> str:
        if not self.files:
            return "no local change: the %d local file(s) equal the deployed ones" % self.same
        names = ", ".join(f.path for f in self.files[:5]) + (", ..." if len(self.files) > 5 else "")
        return "%d changed or new file(s), %s (%s)" % (len(self.files), _size(self.size), names)


def plan(local_root: str, deployed: Dict[str, str]) -> Plan:
    """The local files under ``local_root`` whose hash differs from
    ``deployed`` (path -> sha256) or that ``deployed`` lacks.

    Raises:
        PushRefused: more than :data:`MAX_FILES` or :data:`MAX_BYTES`.
        OSError: ``local_root`` cannot be read.
    """
    if not os.path.isdir(local_root):
        raise OSError("%s is not a directory" % local_root)
    local, complete = python_files(local_root, limit=MAX_MANIFEST_FILES)
    files: List[PushedFile] = []
    same = total = 0
    for rel, path in local.items():
        with open(path, "rb") as f:
            source = f.read()
        digest = sha256(source)
        if deployed.get(rel) == digest:
            same += 1
            continue
        files.append(PushedFile(rel, source, digest))
        total += len(source)
        if len(files) > MAX_FILES or total > MAX_BYTES:
            raise PushRefused(
                "the local changes are more than %d files or %d MB (%s holds %s%d .py files): push a smaller"
                " directory, or deploy"
                % (MAX_FILES, MAX_BYTES // (1024 * 1024), local_root, "" if complete else "over ", len(local))
            )
    return Plan(files, same)


def _size(size: int) -> str:
    return "%d bytes" % size if size < 10 * 1024 else "%.0f KiB" % (size / 1024.0)


def module_name(path: str) -> Optional[str]:
    """The module a task-root-relative ``.py`` path imports as, or None
    (a name that is not an identifier)."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)
