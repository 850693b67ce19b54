"""The child's side of a live code push: pushed files run under their
deployed file names, in the debugged child only.

Each file is compiled with the name it has in the task root, so that the
IDE's breakpoints (mapped to ``/var/task/...``) bind in it and tracebacks
name the file the developer knows. A module already imported is run again
in its own namespace, in the order their imports finished (so that a
module sees the new version of what it imports); one not imported yet, or new, is
imported from the push when the handler imports it. Nothing is written to
disk: the sources stay in memory, and ``linecache`` and debugpy are told
about them (debugpy checks a breakpoint's file and lines on disk).

A module that runs again gets new function and class objects; the
function's other modules that imported them by name (``from helpers import
greet``) are pointed at the new ones. Objects made before the push
(instances, closures, values copied elsewhere) keep what they had.

A file that does not compile is not applied; a module that raises while
it runs again is put back as it was, and the handler runs with the
deployed module.
"""

import importlib.abc
import importlib.util
import linecache
import logging
import os
import sys
import traceback
import types
from typing import Dict, List, Optional, Tuple

from lambda_debugger.wire.push import PushedFile, module_name

log = logging.getLogger("lambda_debugger.child")

#: Pushed sources by deployed file name, for linecache and debugpy.
_sources: Dict[str, bytes] = {}

APPLIED = "applied"
UNCHANGED = "unchanged"
ON_IMPORT = "imported from the push when the handler imports it"
NOT_APPLIED = "not applied"


def apply(files: List[PushedFile], task_root: str) -> List[dict]:
    """Apply ``files`` in this process; return one report entry per file:
    ``{"path", "sha256", "status", "message"}``."""
    report: List[dict] = []
    compiled: List[Tuple[PushedFile, str, types.CodeType, dict]] = []
    for pushed in files:
        filename = os.path.join(task_root, *pushed.path.split("/"))
        entry = {"path": pushed.path, "sha256": pushed.sha256, "status": NOT_APPLIED, "message": ""}
        report.append(entry)
        if _deployed_source(filename) == pushed.source:
            entry["status"] = UNCHANGED
            continue
        try:
            code = compile(pushed.source, filename, "exec", dont_inherit=True)
        except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
            entry["message"] = compile_error(exc, filename)
            continue
        compiled.append((pushed, filename, code, entry))
    if compiled:
        _patch_debugpy()
    loaded = _loaded_modules()
    finder = _finder()
    rerun = []
    for pushed, filename, code, entry in compiled:
        module = loaded.get(filename)
        name = module_name(pushed.path)
        if module is None and name is not None and name in sys.modules:
            # Imported under that name from elsewhere: the standard library,
            # the runtime or a layer. Running the file there would break it.
            entry["message"] = "not a module of the function: %s is imported from %s" % (
                name,
                getattr(sys.modules[name], "__file__", None) or "the interpreter",
            )
            continue
        if module is None:
            if name is None:
                entry["message"] = "not an importable module name"
                continue
            _register(filename, pushed.source)
            finder.add(name, filename, code, pushed.path.endswith("/__init__.py"))
            entry["status"] = ON_IMPORT
        else:
            rerun.append((module, pushed, filename, code, entry))
    order = {id(m): i for i, m in enumerate(sys.modules.values())}
    # sys.modules is in the order imports finished: what a module imports
    # comes before it, so each module runs again after what it imports.
    for module, pushed, filename, code, entry in sorted(rerun, key=lambda r: order.get(id(r[0]), 0)):
        saved = dict(module.__dict__)
        _register(filename, pushed.source)
        try:
            exec(code, module.__dict__)
        except BaseException as exc:  # the module's own code: anything goes
            module.__dict__.clear()
            module.__dict__.update(saved)
            _unregister(filename)
            entry["message"] = "raised while running again, the deployed module is used: %s" % _last_line(exc)
        else:
            entry["status"] = APPLIED
            try:
                _rebind(module, saved, task_root)
            except Exception:  # best effort: the module itself is applied
                log.debug("could not point other modules at the new names of %s", filename, exc_info=True)
    return report


def _rebind(module, old: dict, task_root: str) -> None:
    """Point the function's other modules at the new functions and classes
    of ``module`` where they hold the old ones (``from module import f``).
    Only functions and classes defined in ``module``: other values (numbers,
    strings) may be shared by unrelated names."""
    name = module.__name__
    swaps = {}
    for key, before in old.items():
        after = module.__dict__.get(key)
        if (
            after is not before
            and isinstance(before, (types.FunctionType, type))
            and getattr(before, "__module__", None) == name
        ):
            swaps[id(before)] = (before, after)
    if not swaps:
        return
    root = os.path.join(os.path.abspath(task_root), "")
    for other in list(sys.modules.values()):
        filename = getattr(other, "__file__", None)
        if other is module or not isinstance(filename, str) or not os.path.abspath(filename).startswith(root):
            continue
        namespace = other.__dict__
        for key, value in list(namespace.items()):
            swap = swaps.get(id(value))
            if swap is not None and swap[0] is value:
                namespace[key] = swap[1]


def _deployed_source(filename: str) -> Optional[bytes]:
    try:
        with open(filename, "rb") as f:
            return f.read()
    except OSError:
        return None


def current_handler(handler, applied: List[dict]):
    """The handler to call after a push: looked up again in its module
    (``_HANDLER``) when that module was applied, else ``handler``."""
    if not any(e["status"] == APPLIED for e in applied):
        return handler
    module_path, _, function_name = os.environ.get("_HANDLER", "").strip().rpartition(".")
    try:
        module = sys.modules.get(module_path.replace("/", "."))
        found = getattr(module, function_name, None) if module is not None else None
        while found is not None and getattr(found, "lambda_debugger_config", None) is not None:
            found = getattr(found, "__wrapped__", None)  # the swapped-in proxy of the deployed module
    except Exception:  # a module __getattr__ of the user's
        return handler
    return found if callable(found) else handler


def compile_error(exc: BaseException, filename: str) -> str:
    """The compiler's message, with the deployed file name and line."""
    if isinstance(exc, SyntaxError):
        text = (exc.text or "").strip()
        return "does not compile: %s line %s: %s%s" % (
            filename,
            exc.lineno,
            exc.msg,
            (" (%s)" % text[:120]) if text else "",
        )
    return "does not compile: %s: %s" % (type(exc).__name__, str(exc)[:300])


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]


def _loaded_modules() -> Dict[str, object]:
    """Imported modules by their file's absolute path."""
    out: Dict[str, object] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            out.setdefault(os.path.abspath(filename), module)
    return out


def _register(filename: str, source: bytes) -> None:
    _sources[filename] = source
    text = source.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    # No mtime: linecache.checkcache keeps the entry (it is not from disk).
    linecache.cache[filename] = (len(text), None, lines, filename)


def _unregister(filename: str) -> None:
    _sources.pop(filename, None)
    linecache.cache.pop(filename, None)


class _PushedLoader(importlib.abc.Loader):
    def __init__(self, filename: str, code) -> None:
        self.filename = filename
        self.code = code

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        try:
            exec(self.code, module.__dict__)
        except BaseException as exc:
            _unregister(self.filename)
            source = _deployed_source(self.filename)
            if source is None:
                raise  # new: no deployed module to fall back to
            say(
                "lambda-debugger: pushed %s raised while it was imported, the deployed module is used: %s\n"
                % (self.filename, _last_line(exc))
            )
            deployed = compile(source, self.filename, "exec", dont_inherit=True)
            keep = ("__name__", "__spec__", "__loader__", "__file__", "__path__", "__package__")
            kept = {k: v for k, v in module.__dict__.items() if k in keep}
            module.__dict__.clear()
            module.__dict__.update(kept)
            exec(deployed, module.__dict__)


class _PushedFinder(importlib.abc.MetaPathFinder):
    """Finds pushed modules that were not imported before the push."""

    def __init__(self) -> None:
        self.modules: Dict[str, Tuple[str, object, bool]] = {}

    def add(self, name: str, filename: str, code, package: bool) -> None:
        self.modules[name] = (filename, code, package)

    def find_spec(self, fullname, path=None, target=None):
        found = self.modules.get(fullname)
        if found is None:
            return None
        filename, code, package = found
        return importlib.util.spec_from_file_location(
            fullname,
            filename,
            loader=_PushedLoader(filename, code),
            submodule_search_locations=[os.path.dirname(filename)] if package else None,
        )


_the_finder: Optional[_PushedFinder] = None


def _finder() -> _PushedFinder:
    global _the_finder
    if _the_finder is None:
        _the_finder = _PushedFinder()
        sys.meta_path.insert(0, _the_finder)
    return _the_finder


def _patch_debugpy() -> None:
    """Let debugpy see pushed sources where it reads the file on disk: the
    check that a breakpoint's file exists, and the lines it moves a
    breakpoint to. Private APIs: without them, breakpoints in a new file or
    on a line the deployed file lacks may not bind."""
    try:
        import pydevd_file_utils  # type: ignore[import-not-found]
        from _pydevd_bundle import pydevd_api
    except ImportError:
        log.debug("debugpy's internals not found; breakpoints in pushed files bind as on disk")
        return
    if getattr(pydevd_api, "_lambda_debugger_patched", False):
        return
    exists, code_lines = pydevd_file_utils.exists, getattr(pydevd_api, "_get_code_lines", None)

    def exists_or_pushed(filename):
        return filename in _sources or exists(filename)

    exists_or_pushed.original = exists  # type: ignore[attr-defined]
    pydevd_file_utils.exists = exists_or_pushed
    if code_lines is not None:

        def lines_of_pushed(code):
            if isinstance(code, str) and code in _sources:
                code = compile(_sources[code], code, "exec", dont_inherit=True)
            return code_lines(code)

        lines_of_pushed.original = code_lines  # type: ignore[attr-defined]
        pydevd_api._get_code_lines = lines_of_pushed
    pydevd_api._lambda_debugger_patched = True


def say(text: str) -> None:
    """Tell the function's log and, best effort, the IDE's debug console."""
    sys.stderr.write(text)
    try:
        import pydevd

        py_db = pydevd.get_global_debugger()
        py_db.writer.add_command(py_db.cmd_factory.make_io_message(text, 2))
    except Exception:
        pass
