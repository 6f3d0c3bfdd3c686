"""YAML nodes with locations: composing a document and walking it while
collecting errors that name ``file:line: key``.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import yaml

from exporter.config.errors import ConfigError


class _WantError(Exception):
    """A value failed a check; the message says what was expected."""


class _Src(NamedTuple):
    """A config value with where it came from."""

    node: yaml.Node
    key: str


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


#: libyaml when present: the config of a large fleet composes ~10x faster.
_FAST_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


#: What libyaml names every mark; such nodes come from the file being parsed.
_UNNAMED = "<unicode string>"


def _compose(text: str, source: str, *, fast: bool = True) -> yaml.Node | None:
    """The node tree (with line marks) of one YAML document; errors become ConfigError.

    ``fast=False`` uses the pure-Python loader, whose marks carry ``source``
    (for preset files, whose errors must not name the user's file).
    """
    loader: yaml.SafeLoader | yaml.CSafeLoader | None = None
    try:
        if fast:
            loader = _FAST_LOADER(text)
        else:
            loader = slow = yaml.SafeLoader(text)
            slow.name = source  # marks name the preset file
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # control characters
        line = text[: exc.position or 0].count("\n") + 1
        raise ConfigError(source, line, "(yaml)",
                          f"expected printable YAML text ({exc.reason})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        mark_line = None if mark is None else mark.line + 1
        context = exc.context
        if context and exc.context_mark is not None and exc.context_mark.line + 1 != mark_line:
            # An unclosed bracket or quote is only noticed lines later: say where
            # it began.
            context = f"{context} at line {exc.context_mark.line + 1},"
        what = " ".join(str(p) for p in (context, exc.problem) if p)
        raise ConfigError(source, mark_line, "(yaml)", f"expected valid YAML ({what})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, "(yaml)", f"expected valid YAML ({exc})") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Ctx:
    """Collects errors while the config is walked; builds scalars from nodes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ConfigError] = []
        self._seen: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node | None, key: str, message: str) -> None:
        if node is None:
            err = ConfigError(self.source, None, key, message)
        else:
            name = str(node.start_mark.name)
            path = self.source if name == _UNNAMED else name
            err = ConfigError(path, _line(node), key, message)
        if str(err) not in self._seen:  # a bad template shows once, not once per use
            self._seen.add(str(err))
            self.errors.append(err)

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            raise _WantError("a single value")
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:  # unknown tags, impossible dates: any failure is "not a value"
            raise _WantError("a plain YAML value") from None

    def get(
        self, src: _Src, parse: Callable[[_Ctx, yaml.Node], _T], *, secret: bool = False
    ) -> _T | None:
        """Parse one value; on failure record ``expected (got X)`` and return None.

        ``secret=True`` keeps the value out of the message: config errors reach
        logs and the status page, and a near-miss secret is still a secret.
        """
        try:
            return parse(self, src.node)
        except _WantError as bad:
            got = _got(src.node)
            if secret and isinstance(src.node, yaml.ScalarNode):
                got = f"{len(str(src.node.value))} characters, not shown"
            self.fail(src.node, src.key, f"expected {bad} (got {got})")
            return None

    def mapping(
        self, node: yaml.Node, key: str, allowed: Sequence[str] | None, *, extensions: bool = False
    ) -> dict[str, _Src] | None:
        """A mapping's entries by key; unknown keys reported with a suggestion.

        ``allowed=None`` accepts any string key (names of templates, labels...).
        """
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, f"expected a mapping (got {_got(node)})")
            return None
        try:
            self._constructor.flatten_mapping(node)  # YAML merge keys: <<: *base
        except yaml.YAMLError:
            self.fail(node, key, "expected `<<:` to merge mappings only")
            return None
        out: dict[str, _Src] = {}
        for knode, vnode in node.value:
            name = self.get(_Src(knode, key or "(top)"), _key_text)
            if name is None:
                continue
            sub = f"{key}.{name}" if key else name
            if name in out:
                self.fail(knode, sub, "expected each key once (got a duplicate)")
            elif extensions and name.startswith("x-"):
                continue  # a home for YAML anchors, as in docker-compose files
            elif allowed is not None and name not in allowed:
                self.fail(knode, sub, _unknown_key(name, allowed))
            else:
                out[name] = _Src(vnode, sub)
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[_Src] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, f"expected a list (got {_got(node)})")
            return None
        return [_Src(n, f"{key}[{i}]") for i, n in enumerate(node.value)]


_T = TypeVar("_T")


def _got(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    text = str(node.value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _unknown_key(name: str, allowed: Sequence[str]) -> str:
    hint = ""
    if name == "name" and "qname" in allowed:
        hint = "; the query name is `qname`"
    else:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return f"unknown key{hint} (expected one of: {', '.join(allowed)})"


def _key_text(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if not isinstance(value, str):
        raise _WantError("a text key")
    return value
