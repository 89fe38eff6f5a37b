"""``scalper docs config``: the configuration reference, generated from the schema.

:func:`render` walks :class:`shared.config.AlgoConfig`'s struct tree and writes one table per
section: every key path, its type, default, constraints (``msgspec.Meta`` ``ge``/``gt``/``le``/
``lt``/``pattern``/lengths, ``Literal`` choices) and a description. Descriptions come from the
schema first — ``Meta(description=...)``, an attribute docstring (a string right under the
field), a trailing ``# comment`` on the field's line, the struct's docstring for a section — and
from :data:`NOTES` / :data:`SECTION_NOTES` where the schema says nothing yet. The cross-key rules
are read from the ``raise ConfigError(...)`` lines of ``_check_semantics``; the environment
variables from ``load_env`` (name, ``EnvConfig`` field, default, validation), with the comments
of ``.env.example``, plus every other ``SCALPER_*`` / ``DHAN_*`` variable read under ``shared/``
and ``services/``.

``tests/unit/test_configdoc.py`` fails when ``docs/configuration.md`` differs from
:func:`render`'s output, or when a note names a key the schema no longer has.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml

from shared import config as config_mod
from shared.ops.confignotes import ENV_NOTES, NOTES, SECTION_NOTES

ROOT = Path(__file__).resolve().parent.parent.parent
DOC_PATH = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
SCAN_DIRS = ("shared", "services")
ENV_NAME_RE = re.compile(r"^(?:(?:SCALPER|DHAN)_[A-Z0-9_]+|REDIS_URL|DATABASE_URL)$")
INLINE_DEFAULT_MAX_CHARS = 48
_META_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))

# --------------------------------------------------------------------------- types


class TypeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How a field's annotation reads: ``child`` is the nested struct, if any, with the path
    suffix that reaches it (``""``, ``"[]"`` for list items, ``".<name>"`` for map values)."""

    text: str
    constraints: tuple[str, ...] = ()
    description: str = ""
    child: tuple[str, type] | None = None


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _meta_constraints(meta: msgspec.Meta) -> list[str]:
    out = [
        f"{sym} {_num(getattr(meta, attr))}"
        for attr, sym in _META_BOUNDS
        if getattr(meta, attr) is not None
    ]
    if meta.pattern is not None:
        hhmm = typing.get_args(config_mod.HHMM)[1].pattern
        out.append("HH:MM, 00:00–23:59" if meta.pattern == hhmm else f"matches `{meta.pattern}`")
    if meta.min_length is not None:
        out.append(f"length ≥ {meta.min_length}")
    if meta.max_length is not None:
        out.append(f"length ≤ {meta.max_length}")
    return out


def _literal(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else _num(v)


def type_info(tp: Any) -> TypeInfo:
    """Readable type, constraints and nested struct of an annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        inner = type_info(args[0])
        metas = [m for m in args[1:] if isinstance(m, msgspec.Meta)]
        desc = next((m.description for m in metas if m.description), "")
        cons = tuple(c for m in metas for c in _meta_constraints(m))
        return TypeInfo(
            text=inner.text,
            constraints=cons + inner.constraints,
            description=desc or inner.description,
            child=inner.child,
        )
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        parts = [type_info(a) for a in args]
        return TypeInfo(
            text=" or ".join(p.text for p in parts),
            constraints=tuple(c for p in parts for c in p.constraints),
            description=next((p.description for p in parts if p.description), ""),
            child=next((p.child for p in parts if p.child), None),
        )
    if origin is typing.Literal:
        return TypeInfo(text="one of " + ", ".join(_literal(a) for a in args))
    if origin is list:
        item = type_info(args[0])
        child = ("[]" + item.child[0], item.child[1]) if item.child else None
        return TypeInfo(
            text=f"list of {item.text}",
            child=child,
            constraints=tuple(f"each {c}" for c in item.constraints),
        )
    if origin is dict:
        key, val = type_info(args[0]), type_info(args[1])
        child = (".<name>" + val.child[0], val.child[1]) if val.child else None
        return TypeInfo(
            text=f"map of {key.text} to {val.text}",
            child=child,
            constraints=tuple(f"each value {c}" for c in val.constraints),
        )
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return TypeInfo(text="mapping", child=("", tp))
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "string"}
    return TypeInfo(text=names.get(tp, getattr(tp, "__name__", str(tp))))


# --------------------------------------------------------------------------- descriptions


def field_docs(cls: type) -> dict[str, str]:
    """Per field of a struct class: its attribute docstring, else the trailing ``# comment`` on
    its line(s)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.line[: tok.start[1]].strip():
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    node = ast.parse(source).body[0]
    out: dict[str, str] = {}
    if not isinstance(node, ast.ClassDef):
        return out
    body = node.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[stmt.target.id] = inspect.cleandoc(nxt.value.value)
        else:
            lines = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            found = [comments[n] for n in lines if n in comments]
            found = [c for c in found if not c.startswith(("type:", "noqa", "fmt:"))]
            if found:
                out[stmt.target.id] = " ".join(found)
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --------------------------------------------------------------------------- the schema


class Row(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    type: str
    default: str
    constraints: str
    description: str


def sections(cls: type = config_mod.AlgoConfig, path: str = "") -> Iterator[tuple[str, type]]:
    """(path, struct class) of every section, depth first in field order."""
    yield path, cls
    for f in msgspec.structs.fields(cls):
        info = type_info(f.type)
        if info.child is not None:
            yield from sections(info.child[1], _join(path, f.name) + info.child[0])


def schema_paths(cls: type = config_mod.AlgoConfig) -> set[str]:
    """Every key path, as the tables show them (``indices[].key``, ``...<name>.x``)."""
    return {_join(p, f.name) for p, c in sections(cls) for f in msgspec.structs.fields(c)}


def _default(f: msgspec.structs.FieldInfo, info: TypeInfo) -> tuple[str, Any]:
    """(cell, value for a YAML block below the table or None)."""
    if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT:
        return "**required**", None
    value = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
    if isinstance(value, msgspec.Struct) and info.child is not None and info.child[0] == "":
        return "(its section)", None
    plain = msgspec.to_builtins(value)
    inline = orjson.dumps(plain).decode()
    if len(inline) <= INLINE_DEFAULT_MAX_CHARS:
        return f"`{inline}`", None
    return "see below", plain


def section_markdown(path: str, cls: type, notes: dict[str, str] | None = None) -> list[str]:
    notes = NOTES if notes is None else notes
    docs = field_docs(cls)
    intro = inspect.cleandoc(cls.__doc__ or "") or SECTION_NOTES.get(path, "")
    title = f"`{path}`" if path else "Top level"
    out = [f"### {title}", ""]
    if intro:
        out += [intro, ""]
    out += ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
    blocks: list[str] = []
    for f in msgspec.structs.fields(cls):
        info = type_info(f.type)
        key = _join(path, f.name)
        default, block = _default(f, info)
        desc = info.description or docs.get(f.name, "") or notes.get(key, "")
        if info.child is not None and not desc:
            desc = f"See `{key + info.child[0]}`."
        out.append(
            f"| `{key}` | {_cell(info.text)} | {_cell(default)} | "
            f"{_cell(', '.join(info.constraints))} | {_cell(desc)} |"
        )
        if block is not None:
            dumped = yaml.safe_dump({f.name: block}, sort_keys=False, allow_unicode=True)
            blocks += ["", f"Default of `{key}`:", "", "```yaml", dumped.rstrip(), "```"]
    return out + blocks + [""]


# --------------------------------------------------------------------------- code reading


def _function(fn: Any) -> ast.FunctionDef:
    node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _message(node: ast.expr) -> str:
    """An error message's text; ``{source}`` dropped, other fields as ``<expr>``."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if not isinstance(node, ast.JoinedStr):
        return ast.unparse(node)
    parts: list[str] = []
    for v in node.values:
        if isinstance(v, ast.Constant):
            parts.append(str(v.value))
        elif isinstance(v, ast.FormattedValue):
            expr = ast.unparse(v.value)
            parts.append("\0" if expr == "source" else f"<{expr.removeprefix('cfg.')}>")
    return "".join(parts).replace("\0: ", "").replace("\0", "")


def _raises(fn: ast.FunctionDef) -> list[str]:
    found = []
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Raise)
            and isinstance(node.exc, ast.Call)
            and isinstance(node.exc.func, ast.Name)
            and node.exc.func.id == "ConfigError"
            and node.exc.args
        ):
            found.append((node.lineno, _message(node.exc.args[0])))
    return [m for _, m in sorted(found)]


def semantic_rules() -> list[str]:
    """The cross-key checks of ``_check_semantics``, as the messages they raise."""
    return _raises(_function(config_mod._check_semantics))


class EnvVar(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    field: str = ""
    default: str = ""
    checks: tuple[str, ...] = ()
    read_in: tuple[str, ...] = ()


def _env_reads(
    expr: ast.AST, local: dict[str, ast.expr], seen: frozenset[str] = frozenset()
) -> list[tuple[str, ast.expr | None]]:
    """(variable, default expression) of every environment read in ``expr``, through locals."""
    out: list[tuple[str, ast.expr | None]] = []
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            args = node.args
            if (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and args
                and isinstance(args[0], ast.Constant)
                and ENV_NAME_RE.match(str(args[0].value))
            ):
                out.append((str(args[0].value), args[1] if len(args) > 1 else None))
            elif (
                isinstance(node.func, ast.Name)
                and node.func.id == "_env_bool"
                and len(args) > 2
                and isinstance(args[1], ast.Constant)
            ):
                out.append((str(args[1].value), args[2]))
        elif isinstance(node, ast.Name) and node.id in local and node.id not in seen:
            out += _env_reads(local[node.id], local, seen | {node.id})
    return out


def _default_text(expr: ast.expr | None, local: dict[str, ast.expr]) -> str:
    if expr is None:
        return ""
    if isinstance(expr, ast.Constant):
        return f"`{orjson.dumps(expr.value).decode()}`"
    if isinstance(expr, ast.Name) and expr.id in local:
        names = [n for n, _ in _env_reads(local[expr.id], local)]
        if names:
            return "the value of " + ", ".join(f"`{n}`" for n in names)
    return f"`{ast.unparse(expr)}`"


def load_env_vars() -> list[EnvVar]:
    """What ``load_env`` reads, in the order of ``EnvConfig``'s constructor call."""
    fn = _function(config_mod.load_env)
    local = {
        s.targets[0].id: s.value
        for s in ast.walk(fn)
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
    }
    checks: dict[str, list[str]] = {}
    for msg in _raises(fn):
        m = re.match(r"^env ([A-Z0-9_]+): (.*)$", msg)
        if m:
            checks.setdefault(m.group(1), []).append(m.group(2))
    call = next(
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "EnvConfig"
    )
    out = []
    for kw in call.keywords:
        for name, default in _env_reads(kw.value, local)[:1]:
            extra = [_bool_text()] if _uses_env_bool(kw.value) else []
            out.append(
                EnvVar(
                    name=name,
                    field=(kw.arg or "").lstrip("_") or "",
                    checks=tuple(extra + checks.get(name, [])),
                    default=_default_text(default, local),
                )
            )
    return out


def _uses_env_bool(expr: ast.expr) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_env_bool"
        for n in ast.walk(expr)
    )


def _bool_text() -> str:
    true = "/".join(sorted(config_mod._BOOL_TRUE))
    false = "/".join(sorted(v for v in config_mod._BOOL_FALSE if v))
    return f"true: {true}; false: {false} or empty"


def other_env_vars(root: Path = ROOT, exclude: set[str] | None = None) -> list[EnvVar]:
    """Every other ``SCALPER_*`` / ``DHAN_*`` variable read under ``shared/`` and ``services/``."""
    exclude = exclude or set()
    found: dict[str, dict[str, set[str]]] = {}
    for d in SCAN_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except SyntaxError:
                continue
            for name, default in _reads_in_module(tree):
                if name in exclude:
                    continue
                entry = found.setdefault(name, {"files": set(), "defaults": set()})
                entry["files"].add(rel)
                if default:
                    entry["defaults"].add(default)
    return [
        EnvVar(name=n, read_in=tuple(sorted(v["files"])), default=", ".join(sorted(v["defaults"])))
        for n, v in sorted(found.items())
    ]


def _reads_in_module(tree: ast.AST) -> Iterator[tuple[str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = str(node.args[0].value)
            func = node.func
            is_get = isinstance(func, ast.Attribute) and func.attr in ("get", "getenv")
            is_getenv = isinstance(func, ast.Name) and func.id == "getenv"
            if ENV_NAME_RE.match(name) and (is_get or is_getenv):
                dflt = node.args[1] if len(node.args) > 1 else None
                yield (
                    name,
                    (
                        f"`{orjson.dumps(dflt.value).decode()}`"
                        if isinstance(dflt, ast.Constant)
                        else ""
                    ),
                )
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and ENV_NAME_RE.match(str(node.slice.value))
        ):
            yield str(node.slice.value), ""


def env_example_names(path: Path = ENV_EXAMPLE) -> set[str]:
    if not path.exists():
        return set()
    return {
        ln.split("=", 1)[0].strip()
        for ln in path.read_text().splitlines()
        if "=" in ln and not ln.lstrip().startswith("#")
    }


# --------------------------------------------------------------------------- the page


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    out = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by `scalper docs config` from shared/config.py (and the environment "
        "reads under shared/ and services/). Do not edit by hand: tests/unit/test_configdoc.py "
        "fails when this file is out of date. -->",
        "",
        inspect.cleandoc(config_mod.__doc__ or "").replace("::\n", ":\n"),
        "",
        "The trading configuration is `config/algo.yml` (another file: `SCALPER_CONFIG`). Every "
        "process validates it at start. Paths below are YAML key paths: `indices[].key` is the "
        "`key` of each item of the `indices` list, `<name>` a key you choose in a map.",
        "",
        "## `config/algo.yml`",
        "",
    ]
    for path, cls in sections():
        out += section_markdown(path, cls)
    out += [
        "## Rules across keys",
        "",
        "Checked after the types and ranges above (`_check_semantics`); each fails with this "
        "message (`<...>` is filled in):",
        "",
    ]
    for msg in semantic_rules():
        key, _, why = msg.partition(": ")
        out.append(f"- `{key}`: {why}")
    out += [
        "",
        "## Environment",
        "",
        "Secrets and endpoints come from the environment, never from `config/algo.yml` "
        "(template: `.env.example`).",
        "",
        "### Read by `load_env` (`EnvConfig`)",
        "",
        "| variable | `EnvConfig` field | default | accepted | in `.env.example` | description |",
        "|---|---|---|---|---|---|",
    ]
    listed = env_example_names()
    env_vars = load_env_vars()
    for v in env_vars:
        out.append(
            f"| `{v.name}` | `{v.field}` | {_cell(v.default)} | {_cell('; '.join(v.checks))} "
            f"| {'yes' if v.name in listed else 'no'} | {_cell(ENV_NOTES.get(v.name, ''))} |"
        )
    out += [
        "",
        "### Read elsewhere",
        "",
        "| variable | read in | default | description |",
        "|---|---|---|---|",
    ]
    for v in other_env_vars(exclude={e.name for e in env_vars}):
        files = ", ".join(f"`{f}`" for f in v.read_in)
        out.append(
            f"| `{v.name}` | {files} | {_cell(v.default)} | {_cell(ENV_NOTES.get(v.name, ''))} |"
        )
    return "\n".join(out) + "\n"
