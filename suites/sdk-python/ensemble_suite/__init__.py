"""Write Ensemble test suites in Python.

A suite is a WebAssembly component implementing the ``ensemble:suite@0.3.0``
WIT world; ``componentize-py`` builds one from a Python module (the *app
module*). This package turns plain functions into that component's tests::

    from ensemble_suite import Tests, test, param, sync, log  # Tests: the export

    KEYS = param("keys", int, default=100, help="entries the client expects")

    @test
    def adds():
        assert 1 + 1 == 2

    @test(tags=["sync"], timeout_ms=60_000)
    def waits_for_server():
        sync.barrier("server-ready", 1, timeout_ms=30_000)
        log.info(f"server ready, expecting {KEYS.get()} keys")

A test passes when it returns, fails when it raises (``assert``, any
exception, :func:`fail`) and is skipped by :func:`skip`. Every test runs in a
fresh instance of the component: module state does not carry over from one
test to the next, so tests share data through :data:`sync` topics, not
globals.

The app module must expose the class ``Tests`` (componentize-py looks it up
there): importing it from this package is all it takes. Declare tests and
params at module level: the module is imported once, when the component is
built, and that state is what every instance starts from. For the same reason
the module must not call the run's functions (:func:`role`, :data:`sync`,
:data:`log`, ...) at import time; they only work inside a test.
"""

from __future__ import annotations

import ast
import datetime
import linecache
import math
import os
import re
import sys
import traceback
from typing import Any, Callable, Dict, Generic, Iterator, List, NoReturn, Optional, TypeVar, Union

# Nothing can be imported once the component runs (it has no file system), so
# what the SDK uses later is imported now; Python 3.14's ast.unparse imports
# its helper lazily.
try:
    import _ast_unparse  # noqa: F401
except ImportError:  # Python < 3.14
    pass

try:
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.imports import attach as _attach
    from wit_world.imports import context as _context
    from wit_world.imports import log as _log
    from wit_world.imports import services as _services
    from wit_world.imports import sync as _sync
    from wit_world.imports import types as _types
except ImportError as _error:  # pragma: no cover - only outside a componentize-py build
    raise ImportError(
        "ensemble_suite needs the bindings componentize-py generates for the Ensemble "
        "suite world (module `wit_world`): build the suite with `ensemble suite build` or "
        "`componentize-py -d WIT -w suite componentize APP ...`, or generate them for an "
        "editor with `componentize-py -d WIT -w suite bindings DIR`"
    ) from _error

__version__ = "0.3.0"

__all__ = [
    "Tests",
    "test",
    "param",
    "Param",
    "fail",
    "skip",
    "Failed",
    "Skipped",
    "ParamError",
    "SyncError",
    "SyncTimeout",
    "SyncLost",
    "SyncCancelled",
    "SyncInvalid",
    "sync",
    "Subscription",
    "fault",
    "FaultError",
    "FaultDenied",
    "FaultUnknown",
    "FaultFailed",
    "FaultCancelled",
    "log",
    "attach",
    "run_id",
    "role",
    "instance_index",
    "instance_count",
    "machine",
    "param_text",
    "params",
    "parse_duration",
    "service",
    "service_port",
    "ServiceAddress",
]

T = TypeVar("T")

# ---------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------


class Failed(Exception):
    """Fails the running test with its message (no traceback is added).

    Raised by :func:`fail`; :class:`ParamError` and :class:`SyncError` are
    kinds of it. Any other uncaught exception fails the test too, with its
    type, message and a short traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Skipped(Exception):
    """Skips the running test; raised by :func:`skip`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def fail(message: str) -> NoReturn:
    """Fails the running test with ``message``: raises :class:`Failed`."""
    raise Failed(str(message))


def skip(reason: str) -> NoReturn:
    """Skips the running test, saying why: raises :class:`Skipped`."""
    raise Skipped(str(reason))


class ParamError(Failed):
    """A param is not set though required, or its text does not read as its type.

    Attributes: ``name`` (the param), ``value`` (its text, ``None`` when unset).
    """

    def __init__(self, message: str, name: str, value: Optional[str]) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class SyncError(Failed):
    """A :data:`sync` call failed; uncaught, it fails the test with its message.

    ``kind`` is ``"timeout"``, ``"lost"``, ``"cancelled"`` or ``"invalid"``
    (one subclass each: :class:`SyncTimeout`, :class:`SyncLost`,
    :class:`SyncCancelled`, :class:`SyncInvalid`); ``text`` is the runner's
    explanation; the message reads ``sync KIND: TEXT``.
    """

    kind = "error"

    def __init__(self, text: str) -> None:
        super().__init__(f"sync {self.kind}: {text}")
        self.text = text


class SyncTimeout(SyncError):
    """A wait ran past its timeout."""

    kind = "timeout"


class SyncLost(SyncError):
    """A party of the run was lost (its machine went away or its shard ended abnormally)."""

    kind = "lost"


class SyncCancelled(SyncError):
    """The run was cancelled."""

    kind = "cancelled"


class SyncInvalid(SyncError):
    """The request itself was invalid."""

    kind = "invalid"


_SYNC_ERRORS = {
    _sync.SyncError_Timeout: SyncTimeout,
    _sync.SyncError_Lost: SyncLost,
    _sync.SyncError_Cancelled: SyncCancelled,
    _sync.SyncError_Invalid: SyncInvalid,
}


class FaultError(Failed):
    """A :data:`fault` was not done; uncaught, it fails the test with its message.

    ``kind`` is ``"denied"`` (the plan entry is not granted faults into the
    service: the text names the grant), ``"unknown"`` (no such service or
    instance), ``"failed"`` (tried, and it did not work) or ``"cancelled"``
    (the run is over); one subclass each.
    """

    kind = "error"

    def __init__(self, text: str) -> None:
        super().__init__(f"fault {self.kind}: {text}")
        self.text = text


class FaultDenied(FaultError):
    """The plan entry is not granted faults into the service."""

    kind = "denied"


class FaultUnknown(FaultError):
    """The run has no such service or instance."""

    kind = "unknown"


class FaultFailed(FaultError):
    """The fault was tried and did not work."""

    kind = "failed"


class FaultCancelled(FaultError):
    """The run was cancelled, or is over."""

    kind = "cancelled"


_FAULT_ERRORS = {
    _services.FaultError_Denied: FaultDenied,
    _services.FaultError_Unknown: FaultUnknown,
    _services.FaultError_Failed: FaultFailed,
    _services.FaultError_Cancelled: FaultCancelled,
}

# ---------------------------------------------------------------------------
# Phases: import (build time), list/describe, run
# ---------------------------------------------------------------------------

_phase: Optional[str] = None  # None while the app module is imported


def _in_test(what: str) -> None:
    if _phase != "run":
        where = "at import time" if _phase is None else f"in `{_phase}`"
        raise RuntimeError(
            f"ensemble_suite.{what} was called {where}: the run's functions (context, sync, "
            "log, attach) only work inside a test"
        )


def _at_import(what: str) -> None:
    if _phase is not None:
        raise RuntimeError(
            f"ensemble_suite.{what} was called inside a test: declare tests and params at "
            "module level, where they are registered when the component is built"
        )


# ---------------------------------------------------------------------------
# Sources for tracebacks and assertion messages
# ---------------------------------------------------------------------------
#
# The component has no file system when it runs: the app's files are read only
# while componentize-py imports the module at build time. Their lines are kept
# in linecache (with no mtime, so checkcache keeps them) and end up in the
# snapshot every instance starts from.

_STDLIB = os.path.dirname(os.__file__)
_SDK_FILE = __file__
_pinned: set = set()


def _pin(filename: Optional[str]) -> None:
    if (not filename or not filename.endswith(".py") or filename in _pinned
            or filename.startswith(_STDLIB)):
        return
    _pinned.add(filename)
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, ValueError):
        return
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(text), None, lines, filename)


def _pin_loaded_sources() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith(("wit_world", "componentize_py", "poll_loop", "ensemble_suite")):
            continue
        _pin(getattr(module, "__file__", None))


def _short_path(filename: str) -> str:
    # componentize-py mounts each -p directory as /0, /1, ...: show the path inside it.
    return re.sub(r"^/\d+/", "", filename)


# ---------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------

_UNITS = {
    "nanos": 1e-9, "nsec": 1e-9, "ns": 1e-9,
    "micros": 1e-6, "usec": 1e-6, "us": 1e-6, "\u00b5s": 1e-6,
    "millis": 1e-3, "msec": 1e-3, "ms": 1e-3,
    "seconds": 1, "second": 1, "secs": 1, "sec": 1, "s": 1,
    "minutes": 60, "minute": 60, "mins": 60, "min": 60, "m": 60,
    "hours": 3600, "hour": 3600, "hrs": 3600, "hr": 3600, "h": 3600,
    "days": 86400, "day": 86400, "d": 86400,
}
_DURATION_PART = re.compile(r"([0-9]+)\s*([A-Za-z\u00b5]+)\s*")


def parse_duration(text: str) -> datetime.timedelta:
    """Reads a duration as plans write it: ``"250ms"``, ``"30s"``, ``"2m"``, ``"1h 30m"``.

    Whole numbers, each with a unit (ns, us, ms, s, m, h, d and their long
    forms such as ``sec``, ``min``, ``hours``): the grammar of the suite
    ABI's ``duration`` param type, which the runner checks plans against.
    Raises ``ValueError`` otherwise.
    """
    s = text.strip()
    pos, total_ns = 0, 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if not match or match.group(2) not in _UNITS:
            raise ValueError(f"{text!r} is not a duration such as \"30s\", \"2m\" or \"250ms\"")
        unit = _UNITS[match.group(2)]
        total_ns += int(match.group(1)) * round(unit * 1_000_000_000)
        pos = match.end()
    if not s:
        raise ValueError("an empty text is not a duration")
    return datetime.timedelta(microseconds=total_ns / 1000)


def _format_duration(value: datetime.timedelta) -> str:
    us = round(value.total_seconds() * 1_000_000)
    if us <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000),
                       ("s", 1_000_000), ("ms", 1000), ("us", 1)):
        count, us = divmod(us, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise ValueError
    return int(text)


def _parse_float(text: str) -> float:
    t = text.strip()
    if "_" in t:
        raise ValueError
    value = float(t)
    if not math.isfinite(value):
        raise ValueError
    return value


def _parse_bool(text: str) -> bool:
    t = text.strip()
    if t == "true":
        return True
    if t == "false":
        return False
    raise ValueError


# Python type -> (WIT type, parser, "is not ..." wording, example)
_KINDS: Dict[Any, Any] = {
    str: (_types.ParamType.STRING, str, "a string", "text"),
    int: (_types.ParamType.INTEGER, _parse_int, "an integer", "a whole number such as 100"),
    float: (_types.ParamType.FLOAT, _parse_float, "a float", "a number such as 0.5"),
    bool: (_types.ParamType.BOOLEAN, _parse_bool, "a boolean", "true or false"),
    datetime.timedelta: (_types.ParamType.DURATION, parse_duration, "a duration",
                         'a duration such as "30s", "2m" or "250ms"'),
}
_KIND_NAMES = {"string": str, "str": str, "integer": int, "int": int, "float": float,
               "boolean": bool, "bool": bool, "duration": datetime.timedelta}


class Param(Generic[T]):
    """A declared param; made by :func:`param`, read with :meth:`get`.

    Attributes: ``name``, ``type`` (the Python type), ``required``,
    ``default`` (the typed default or ``None``), ``default_text`` (as
    :meth:`Tests.describe` reports it) and ``help``.
    """

    def __init__(self, name: str, type_: Any, required: bool, default: Optional[T],
                 default_text: Optional[str], help: str) -> None:
        self.name = name
        self.type = type_
        self.required = required
        self.default = default
        self.default_text = default_text
        self.help = help

    def __repr__(self) -> str:
        return (f"param({self.name!r}, {self.type.__name__}, required={self.required}, "
                f"default={self.default_text!r})")

    def is_set(self) -> bool:
        """Whether the plan entry sets this param."""
        return self.text() is not None

    def text(self) -> Optional[str]:
        """The param's text as the plan entry sets it, or ``None``."""
        _in_test(f"param {self.name!r}.text()")
        return _context.param(self.name)

    def get(self) -> T:
        """The param's value read as its type; the default when it is not set.

        ``None`` when it is neither set nor has a default. Raises
        :class:`ParamError` (failing the test, unless caught) when a required
        param is not set or the text does not read as the type.
        """
        _in_test(f"param {self.name!r}.get()")
        text = _context.param(self.name)
        if text is None:
            if self.required:
                raise ParamError(
                    f"param `{self.name}` is required and the plan entry does not set it "
                    f"({_KINDS[self.type][0].name.lower()}: {self.help or _KINDS[self.type][3]})",
                    self.name, None)
            return self.default  # type: ignore[return-value]
        return self._read(text)

    def _read(self, text: str) -> T:
        _, parse, article, example = _KINDS[self.type]
        try:
            return parse(text)
        except (ValueError, OverflowError):
            raise ParamError(f"param `{self.name}` is {_quote(text)}, which is not {article} "
                             f"({example})", self.name, text) from None

    def _info(self) -> Any:
        return _types.ParamInfo(self.name, _KINDS[self.type][0], self.required,
                                self.default_text, self.help)


_params: List[Param] = []


def param(name: str, type: Any = str, *, default: Any = None, required: bool = False,
          help: str = "") -> Param:
    """Declares a param the suite reads, at module level; returns its :class:`Param`.

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or ``datetime.timedelta``
    (a duration: the plan writes ``"250ms"``, ``"30s"``, ``"2m"``, ``"1h 30m"``;
    :meth:`Param.get` returns a ``timedelta``). The names ``"string"``,
    ``"integer"``, ``"float"``, ``"boolean"`` and ``"duration"`` work too.

    ``default`` is used when the plan entry does not set the param: a value
    of the type or its text (``"30s"``). A ``required`` param has no default.
    ``help`` is one line saying what the value means; ``ensemble suite
    inspect`` shows it. The runner checks every plan entry against these
    declarations before anything runs.
    """
    _at_import(f"param({name!r})")
    if not isinstance(name, str) or not name:
        raise ValueError(f"param name must be a non-empty string, not {name!r}")
    if any(p.name == name for p in _params):
        raise ValueError(f"param {name!r} is declared twice")
    type_ = _KIND_NAMES.get(type, type) if isinstance(type, str) else type
    if type_ not in _KINDS:
        raise TypeError(f"param {name!r}: type must be str, int, float, bool or "
                        f"datetime.timedelta, not {type!r}")
    if required and default is not None:
        raise ValueError(f"param {name!r} is required, so it cannot have a default")
    typed, text = None, None
    if default is not None:
        typed, text = _default(name, type_, default)
    declared: Param = Param(name, type_, bool(required), typed, text, str(help))
    _params.append(declared)
    _pin_loaded_sources()
    return declared


def _default(name: str, type_: Any, default: Any) -> Any:
    if isinstance(default, str) and type_ is not str:
        kind = _KINDS[type_]
        try:
            return kind[1](default), default
        except ValueError:
            raise ValueError(f"param {name!r}: default {default!r} is not {kind[2]} "
                             f"({kind[3]})") from None
    if type_ is bool and isinstance(default, bool):
        return default, "true" if default else "false"
    if type_ is int and isinstance(default, int) and not isinstance(default, bool):
        return default, str(default)
    if type_ is float and isinstance(default, (int, float)) and not isinstance(default, bool):
        if math.isfinite(default):
            return float(default), repr(float(default))
    if type_ is str and isinstance(default, str):
        return default, default
    if type_ is datetime.timedelta and isinstance(default, datetime.timedelta):
        return default, _format_duration(default)
    raise TypeError(f"param {name!r}: default {default!r} does not fit type {type_.__name__}")


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


class _Case:
    __slots__ = ("name", "func", "tags", "ignored", "timeout_ms")

    def __init__(self, name: str, func: Callable[[], Any], tags: List[str], ignored: bool,
                 timeout_ms: Optional[int]) -> None:
        self.name, self.func, self.tags = name, func, tags
        self.ignored, self.timeout_ms = ignored, timeout_ms

    def info(self) -> Any:
        return _types.TestInfo(self.name, list(self.tags), self.ignored, self.timeout_ms)


_cases: List[_Case] = []


def test(func: Optional[Callable[[], Any]] = None, *, name: Optional[str] = None,
         tags: Union[List[str], tuple, str] = (), ignore: bool = False,
         timeout_ms: Optional[int] = None) -> Any:
    """Registers a function of no arguments as a test; use as ``@test`` or ``@test(...)``.

    ``name`` defaults to the function's name and must be unique in the suite.
    ``tags`` are free-form (reports and ``-E 'tag(...)'`` filters);
    ``ignore=True`` lists the test without running it unless asked for
    (``ensemble run --run-ignored``); ``timeout_ms`` overrides the plan's
    test timeout. Tests run in the order they are registered. The function
    is returned unchanged.
    """

    def register(f: Callable[[], Any]) -> Callable[[], Any]:
        _at_import(f"test({getattr(f, '__name__', f)!r})")
        if not callable(f):
            raise TypeError(f"@test decorates a function, not {f!r}")
        test_name = name if name is not None else f.__name__
        if not isinstance(test_name, str) or not test_name:
            raise ValueError(f"test name must be a non-empty string, not {test_name!r}")
        if any(c.name == test_name for c in _cases):
            raise ValueError(f"test {test_name!r} is registered twice")
        code = getattr(f, "__code__", None)
        if code is not None and code.co_flags & 0x80:  # CO_COROUTINE
            raise TypeError(f"test {test_name!r}: async tests are not supported")
        if code is not None and code.co_argcount - len(getattr(f, "__defaults__", None) or ()) > 0:
            raise TypeError(f"test {test_name!r}: a test function takes no arguments")
        tag_list = [tags] if isinstance(tags, str) else list(tags)
        if not all(isinstance(t, str) for t in tag_list):
            raise TypeError(f"test {test_name!r}: tags must be strings, not {tags!r}")
        if timeout_ms is not None and (not isinstance(timeout_ms, int) or timeout_ms < 0):
            raise ValueError(f"test {test_name!r}: timeout_ms must be a whole number of "
                             f"milliseconds, not {timeout_ms!r}")
        _cases.append(_Case(test_name, f, tag_list, bool(ignore), timeout_ms))
        _pin(getattr(code, "co_filename", None))
        _pin_loaded_sources()
        return f

    if func is not None:
        return register(func)
    return register


def _failure_message(error: BaseException) -> str:
    if isinstance(error, Failed):
        return error.message
    if isinstance(error, AssertionError):
        if error.args and error.args[0] is not None and str(error) != "":
            return str(error)
        return _bare_assertion(error)
    return _describe_exception(error)


def _user_frames(error: BaseException) -> List[traceback.FrameSummary]:
    frames = traceback.extract_tb(error.__traceback__)
    return [f for f in frames if f.filename != _SDK_FILE]


def _describe_exception(error: BaseException) -> str:
    try:
        head = "".join(traceback.format_exception_only(type(error), error)).rstrip()
    except Exception:  # noqa: BLE001 - never let the report itself fail
        head = f"{type(error).__name__}: {error}"
    lines = [head]
    if isinstance(error, ImportError) and _phase == "run":
        lines.append("(a suite cannot import modules while a test runs: import them at module "
                     "level, where they are loaded when the component is built)")
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        lines.append(f"caused by {type(cause).__name__}: {cause}")
    frames = _user_frames(error)[-8:]
    if frames:
        lines.append("Traceback (most recent call last):")
        for frame in frames:
            path = _short_path(frame.filename)
            lines.append(f'  File "{path}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line.strip()}")
    return "\n".join(lines)


def _bare_assertion(error: AssertionError) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "AssertionError"
    frame, lineno = tb.tb_frame, tb.tb_lineno
    filename = frame.f_code.co_filename
    where = f"{_short_path(filename)}:{lineno}, in {frame.f_code.co_name}"
    source = "".join(linecache.getlines(filename))
    node = None
    if source:
        try:
            candidates = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assert)
                          and n.lineno <= lineno <= (n.end_lineno or n.lineno)]
            node = min(candidates, key=lambda n: (n.end_lineno or n.lineno) - n.lineno,
                       default=None)
        except (SyntaxError, ValueError):
            node = None
    if node is None:
        line = linecache.getline(filename, lineno).strip()
        return f"AssertionError at {where}" + (f": {line}" if line else "")
    expression = ast.get_source_segment(source, node.test) or "assert"
    expression = " ".join(expression.split())
    message = f"assertion failed: {expression} ({where})"
    try:
        values = _assert_values(node.test, frame, source)
    except Exception:  # noqa: BLE001 - the values are a bonus
        values = []
    if values:
        message += "\n  where " + "\n    and ".join(values)
    return message


def _assert_values(expr: ast.AST, frame: Any, source: str) -> List[str]:
    """The values of the names, attributes and constant subscripts in ``expr``.

    These are read again after the assertion failed: only side-effect-free
    forms are evaluated (no calls), so reading them cannot change anything.
    """

    def simple(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return True
        if isinstance(node, ast.Attribute):
            return simple(node.value)
        if isinstance(node, ast.Subscript):
            return simple(node.value) and isinstance(node.slice, ast.Constant)
        return False

    shown: List[str] = []
    seen: set = set()

    def visit(node: ast.AST) -> None:
        if simple(node):
            text = " ".join((ast.get_source_segment(source, node) or ast.unparse(node)).split())
            if text in seen:
                return
            seen.add(text)
            try:
                value = eval(compile(ast.Expression(node), "<assert>", "eval"),  # noqa: S307
                             frame.f_globals, frame.f_locals)
            except Exception:  # noqa: BLE001
                return
            if callable(value) or type(value).__name__ == "module":
                return
            try:
                shown_value = repr(value)
            except Exception:  # noqa: BLE001
                return
            if len(shown_value) > 200:
                shown_value = shown_value[:197] + "..."
            if shown_value != text:
                shown.append(f"{text} = {shown_value}")
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(expr)
    return shown[:8]


class Tests(_exports.Tests):
    """The ``tests`` export of the suite world, over the registered tests.

    componentize-py looks for a class named ``Tests`` in the app module:
    ``from ensemble_suite import Tests`` there is enough.
    """

    def list(self) -> List[Any]:
        """All tests of the suite, in registration order."""
        global _phase
        _phase = "list"
        return [case.info() for case in _cases]

    def describe(self) -> Any:
        """The suite's tests and the params it declares."""
        global _phase
        _phase = "describe"
        return _types.SuiteInfo([case.info() for case in _cases], [p._info() for p in _params])

    def run(self, name: str) -> Any:
        """Runs the test called ``name``; turns its outcome into a test result."""
        global _phase
        _phase = "run"
        case = next((c for c in _cases if c.name == name), None)
        if case is None:
            return _types.TestResult_Fail(f"no test named {name!r} in this suite")
        try:
            case.func()
        except Skipped as skipped:
            return _types.TestResult_Skip(skipped.reason)
        except BaseException as error:  # noqa: BLE001 - every failure becomes a result
            try:
                message = _failure_message(error)
            except BaseException:  # noqa: BLE001
                message = f"{type(error).__name__}: {error}"
            return _types.TestResult_Fail(message)
        return _types.TestResult_Pass()


# ---------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------


def run_id() -> str:
    """The id of the run this test belongs to."""
    _in_test("run_id()")
    return _context.run_id()


def role() -> str:
    """The role of this plan entry, e.g. ``"server"`` or ``"client"``."""
    _in_test("role()")
    return _context.role()


def instance_index() -> int:
    """Zero-based index of this instance among the instances of its role."""
    _in_test("instance_index()")
    return _context.instance_index()


def instance_count() -> int:
    """How many instances of this role take part in the run."""
    _in_test("instance_count()")
    return _context.instance_count()


def machine() -> str:
    """Name of the machine executing this test."""
    _in_test("machine()")
    return _context.machine()


def param_text(name: str) -> Optional[str]:
    """The text of param ``name`` as the plan entry sets it, or ``None`` (no checks)."""
    _in_test(f"param_text({name!r})")
    return _context.param(name)


def params() -> Dict[str, str]:
    """Every param the plan entry sets, as text, sorted by name."""
    _in_test("params()")
    return dict(_context.params())


# ---------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------


class ServiceAddress:
    """Where one of the run's services is: ``host`` and ``port``.

    Reaching it needs the plan entry's grant ``capabilities.net =
    ["service:NAME"]``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def addr(self) -> str:
        """``host:port`` (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """``http://host:port`` followed by ``path``."""
        return f"http://{self.addr()}{path}"

    def __repr__(self) -> str:
        return f"ServiceAddress({self.host!r}, {self.port})"


def _service_prefix(name: str) -> str:
    return name.upper().replace("-", "_") + "_SERVICE"


def service(name: str) -> ServiceAddress:
    """The address of the run's service ``name`` (its first instance), from
    the variables the runner sets (``DB_SERVICE_HOST``, ``DB_SERVICE_PORT``);
    fails the test when the run has no such service."""
    prefix = _service_prefix(name)
    host = os.environ.get(f"{prefix}_HOST")
    if host is None:
        raise Failed(
            f"the run has no service {name!r} (no ${prefix}_HOST): is it in the plan's [[services]], and ready?"
        )
    return ServiceAddress(host, service_port(name))


def service_port(name: str, port: str = "") -> int:
    """The port ``{port.PORT}`` of service ``name`` (``""``: its ``{port}``)."""
    var = f"{_service_prefix(name)}_PORT" + (f"_{port.upper().replace('-', '_')}" if port else "")
    value = os.environ.get(var)
    if value is None or not value.isdigit():
        raise Failed(f"service {name!r} has no such port (${var} is {value!r})")
    return int(value)


# ---------------------------------------------------------------------------
# Sync
# ---------------------------------------------------------------------------


def _millis(timeout_ms: Union[int, float, datetime.timedelta]) -> int:
    if isinstance(timeout_ms, datetime.timedelta):
        return max(0, round(timeout_ms.total_seconds() * 1000))
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)):
        raise TypeError(f"timeout_ms must be milliseconds or a timedelta, not {timeout_ms!r}")
    return max(0, int(timeout_ms))


def _call_sync(what: str, call: Callable[[], T]) -> T:
    _in_test(f"sync.{what}")
    try:
        return call()
    except Err as error:
        kind = _SYNC_ERRORS.get(type(error.value), SyncInvalid)
        raise kind(getattr(error.value, "value", str(error.value))) from None


class Subscription:
    """A cursor over one topic, from its first message; made by :func:`sync.subscribe`.

    Use it as a context manager to release it early (it is released with the
    instance anyway).
    """

    def __init__(self, topic: str, handle: Any) -> None:
        self.topic = topic
        self._handle = handle

    def next(self, timeout_ms: Union[int, datetime.timedelta]) -> str:
        """The next message, waiting up to ``timeout_ms`` for one to be published.

        Raises :class:`SyncError` (:class:`SyncTimeout` when none came in time).
        """
        millis = _millis(timeout_ms)
        return _call_sync(f"subscribe({self.topic!r}).next()", lambda: self._handle.next(millis))

    def take(self, count: int, timeout_ms: Union[int, datetime.timedelta]) -> List[str]:
        """The next ``count`` messages, waiting up to ``timeout_ms`` for each."""
        return [self.next(timeout_ms) for _ in range(count)]

    def messages(self, timeout_ms: Union[int, datetime.timedelta]) -> Iterator[str]:
        """Iterates over the messages, waiting up to ``timeout_ms`` for each; ends at
        the first wait that times out (other sync errors are raised)."""
        while True:
            try:
                yield self.next(timeout_ms)
            except SyncTimeout:
                return

    def close(self) -> None:
        """Releases the cursor."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.__exit__(None, None, None)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Sync:
    """Coordination between the parts of one run, across machines (``sync.*``).

    States count signals and topics keep every message, for the whole run.
    Timeouts are milliseconds (a ``timedelta`` works too). Every call raises
    :class:`SyncError` when it fails; uncaught, that fails the test.
    """

    Error = SyncError
    Timeout = SyncTimeout
    Lost = SyncLost
    Cancelled = SyncCancelled
    Invalid = SyncInvalid

    def signal(self, state: str) -> int:
        """Increments the counter of ``state``; returns its new value (1 for the first)."""
        return _call_sync(f"signal({state!r})", lambda: _sync.signal(state))

    def barrier(self, state: str, target: int, timeout_ms: Union[int, datetime.timedelta]) -> None:
        """Waits until the counter of ``state`` reaches ``target``."""
        millis = _millis(timeout_ms)
        _call_sync(f"barrier({state!r})", lambda: _sync.barrier(state, target, millis))

    def signal_and_wait(self, state: str, target: int,
                        timeout_ms: Union[int, datetime.timedelta]) -> int:
        """Signals ``state``, then waits until its counter reaches ``target``;
        returns the counter's value after this signal."""
        millis = _millis(timeout_ms)
        return _call_sync(f"signal_and_wait({state!r})",
                          lambda: _sync.signal_and_wait(state, target, millis))

    def publish(self, topic: str, payload: str) -> int:
        """Appends ``payload`` to ``topic``; returns its sequence number (1 for the first)."""
        return _call_sync(f"publish({topic!r})", lambda: _sync.publish(topic, str(payload)))

    def subscribe(self, topic: str) -> Subscription:
        """A cursor over ``topic`` from its first message."""
        handle = _call_sync(f"subscribe({topic!r})", lambda: _sync.subscribe(topic))
        return Subscription(topic, handle)

    def __repr__(self) -> str:
        return "<ensemble_suite.sync>"


sync = _Sync()


def _call_fault(what: str, call: Callable[[], T]) -> T:
    _in_test(f"fault.{what}")
    try:
        return call()
    except Err as error:
        kind = _FAULT_ERRORS.get(type(error.value), FaultFailed)
        raise kind(getattr(error.value, "value", str(error.value))) from None


_SIGNALS = {
    "TERM": "TERM", "KILL": "KILL", "INT": "INT", "HUP": "HUP", "QUIT": "QUIT", "USR1": "USR1", "USR2": "USR2",
}


class _Fault:
    """Faults into the run's services, on whatever machine runs them (``fault.*``).

    Each call answers once the fault is done: ``restart`` once the service is
    ready again, ``stop`` once it exited. ``instance`` picks one instance of a
    service that runs on several machines (``None``: every one). The plan
    entry needs the grant: ``capabilities = { faults = ["db"] }``. Every call
    raises :class:`FaultError` when the fault is not done.
    """

    Error = FaultError
    Denied = FaultDenied
    Unknown = FaultUnknown
    Failed = FaultFailed
    Cancelled = FaultCancelled

    def stop(self, service: str, instance: Optional[int] = None) -> None:
        """SIGTERM, then SIGKILL after its ``stop_timeout``; returns once it exited."""
        _call_fault(f"stop({service!r})", lambda: _services.stop(service, instance))

    def start(self, service: str, instance: Optional[int] = None) -> None:
        """Starts a stopped service again (same ports, same ``{dir}``); returns once it is ready."""
        _call_fault(f"start({service!r})", lambda: _services.start(service, instance))

    def restart(self, service: str, instance: Optional[int] = None) -> None:
        """Stops and starts it; returns once it is ready again."""
        _call_fault(f"restart({service!r})", lambda: _services.restart(service, instance))

    def kill(self, service: str, signal: str = "KILL", instance: Optional[int] = None) -> None:
        """Sends ``signal`` (``"TERM"``, ``"KILL"``, ``"INT"``, ``"HUP"``, ``"QUIT"``,
        ``"USR1"``, ``"USR2"``); returns once it is sent (``"KILL"``: once it exited)."""
        name = str(signal).upper()
        name = name[3:] if name.startswith("SIG") else name
        if name not in _SIGNALS:
            raise FaultUnknown(f"no signal {signal!r}; kill sends one of {', '.join(_SIGNALS)}")
        sig = getattr(_services.Signal, name)
        _call_fault(f"kill({service!r}, {name!r})", lambda: _services.kill(service, instance, sig))

    def pause(self, service: str, instance: Optional[int] = None) -> None:
        """SIGSTOP: it holds still, its connections open, until :meth:`resume`."""
        _call_fault(f"pause({service!r})", lambda: _services.pause(service, instance))

    def resume(self, service: str, instance: Optional[int] = None) -> None:
        """SIGCONT after a pause."""
        _call_fault(f"resume({service!r})", lambda: _services.resume(service, instance))

    def __repr__(self) -> str:
        return "<ensemble_suite.fault>"


fault = _Fault()
"""Faults into the run's services: ``fault.restart("db")``, ``fault.pause("db")``, …"""
"""The sync functions: ``sync.signal``, ``sync.barrier``, ``sync.signal_and_wait``,
``sync.publish``, ``sync.subscribe``."""

# ---------------------------------------------------------------------------
# Log and attachments
# ---------------------------------------------------------------------------

_LEVELS = {
    "trace": _log.Level.TRACE,
    "debug": _log.Level.DEBUG,
    "info": _log.Level.INFO,
    "warn": _log.Level.WARN,
    "warning": _log.Level.WARN,
    "error": _log.Level.ERROR,
}


class _Log:
    """Structured log lines of the running test, streamed live.

    ``log.info(message)``, ``log.trace``, ``log.debug``, ``log.warn`` (or
    ``log.warning``), ``log.error``; or ``log(level, message)`` with a level
    name. Messages that are not strings are written with ``str()``.
    """

    def __call__(self, level: str, message: Any) -> None:
        wit_level = _LEVELS.get(str(level).lower())
        if wit_level is None:
            raise ValueError(f"log level must be trace, debug, info, warn or error, not {level!r}")
        _in_test("log()")
        _log.log(wit_level, str(message))

    def trace(self, message: Any) -> None:
        """Logs ``message`` at level trace."""
        self("trace", message)

    def debug(self, message: Any) -> None:
        """Logs ``message`` at level debug."""
        self("debug", message)

    def info(self, message: Any) -> None:
        """Logs ``message`` at level info."""
        self("info", message)

    def warn(self, message: Any) -> None:
        """Logs ``message`` at level warn."""
        self("warn", message)

    warning = warn

    def error(self, message: Any) -> None:
        """Logs ``message`` at level error (the test's outcome does not change)."""
        self("error", message)

    def __repr__(self) -> str:
        return "<ensemble_suite.log>"


log = _Log()


def attach(name: str, content: Union[bytes, bytearray, memoryview, str]) -> bool:
    """Attaches ``content`` (bytes, or text written as UTF-8) to the running test as ``name``.

    ``name`` is a plain file name (``"server.log"``); its extension decides
    how a browser shows it. Returns ``True`` when attached. When the runner
    refuses (a bad or reused name, the plan's ``attachment_limit``) it
    returns ``False`` and logs the reason as a warning: the test goes on.
    """
    _in_test(f"attach({name!r})")
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    try:
        _attach.attach(name, data)
    except Err as error:
        _log.log(_log.Level.WARN, f"attachment {_quote(name)} refused: {error.value}")
        return False
    return True
