"""The one YAML reader of user files (``--config``, protocols, ``--set`` values): bounded before and while parsing.

A file must be a regular file of at most :data:`MAX_BYTES`; nesting deeper than :data:`MAX_DEPTH` is refused
as the parser meets it (PyYAML's composer recurses, and 20,000 levels ended in ``RecursionError``); aliases
(``*name``) are refused, so a few hundred bytes cannot expand to billions of values ("billion laughs"); a key
given twice in one mapping is an error (YAML loaders keep the last one silently). Everything else is
``yaml.SafeLoader``: plain data, no Python objects.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

#: largest YAML file anpvs reads (configs and protocols are a few kilobytes)
MAX_BYTES = 1 << 20
#: deepest nesting of mappings and lists (anpvs's own files nest 4 levels)
MAX_DEPTH = 32


class YamlRefused(yaml.YAMLError):
    """YAML that anpvs does not read: an alias, too deep a nesting, a duplicate key (the message says which)."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, with a nesting bound and with duplicate keys refused."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlRefused(f"uses the YAML alias *{event.anchor[:40]} (line {event.start_mark.line + 1}); anpvs "
                              f"does not expand anchors and aliases: write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise YamlRefused(f"nests deeper than {MAX_DEPTH} levels (line {line}); an anpvs config is a "
                                  f"few levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        from ..core.errors import short

        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise YamlRefused(f"gives the key {short(key, 40)} twice (lines {seen[key]} and {line}); "
                                      f"keep one")
                seen[key] = line
            except TypeError:  # an unhashable key: SafeConstructor says so
                continue
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """``text`` parsed by :class:`BoundedLoader` (``yaml.YAMLError``, :class:`YamlRefused` included, on bad input)."""
    if len(text) > MAX_BYTES:
        raise YamlRefused(f"is larger than {MAX_BYTES // 1024} KiB")
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def read_yaml(path: str | os.PathLike[str], *, what: str, error: type[Exception], fix: str) -> Any:
    """The YAML document in the file ``path``; ``error`` (one line: ``what``, the path, the problem, ``fix``)
    when it is missing, not a regular file, larger than :data:`MAX_BYTES`, not UTF-8 text or not YAML anpvs
    reads (:class:`BoundedLoader`)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{what} {str(p)!r} not found; {fix}") from None
    except OSError as e:
        raise error(f"{what} {str(p)!r} cannot be read ({e.strerror or type(e).__name__}); {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {str(p)!r} is not a regular file (a {_kind(st.st_mode)}); {fix}")
    if st.st_size > MAX_BYTES:
        raise error(f"{what} {str(p)!r} is larger than {MAX_BYTES // 1024} KiB ({st.st_size} bytes); {fix}")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # the size can change between stat and read
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {str(p)!r} is not a text (YAML) file") from None
    except OSError as e:
        raise error(f"{what} {str(p)!r} cannot be read ({e.strerror or type(e).__name__}); {fix}") from None
    try:
        return parse_yaml(text)
    except YamlRefused as e:
        raise error(f"{what} {str(p)!r} {e}") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0][:120] if str(e) else "syntax error"
        raise error(f"{what} {str(p)!r} is not valid YAML ({first})") from None


__all__ = ["MAX_BYTES", "MAX_DEPTH", "BoundedLoader", "YamlRefused", "parse_yaml", "read_yaml"]


def read_protocol_file(path: str | os.PathLike[str], error: type[Exception]) -> Any:
    """The YAML document of an ``anpvs reproduce --protocol`` file (:func:`read_yaml`), ``error`` when it is
    none. The command line reads it once before its job imports torch, so that a hostile file is refused in a
    fraction of a second; the job reads it again and checks what it holds."""
    return read_yaml(path, what="protocol file", error=error,
                     fix="pass a protocol YAML file (see the shipped ones in anpvs/protocols)")

