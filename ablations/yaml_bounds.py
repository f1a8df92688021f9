"""Bounded YAML loading: a file's size and its expanded size are checked before PyYAML builds any object, and
every YAML file (a config, a sweep spec, a run folder's config) is read by ``read_yaml``, whose refusals are one line
naming the file (``yaml_problem`` turns PyYAML's several-line errors into one).

An alias (``*a``) names an anchored node, so a file of a few hundred bytes can describe a document of
billions of values (the "billion laughs"); ``yaml.safe_load`` would build every one of them and run out of
memory. PyYAML's composer (``SafeLoader.get_single_node``) gives the node graph with each alias as a shared
reference to its anchor's node, nothing expanded; this module counts the graph's expanded size, memoised per
node so the count costs one visit per distinct node, and constructs the document only when it fits.
PyYAML has no such bound, so the count (``expanded_size``) is written here by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: The largest YAML file read (bytes). A spec or config is a few KB; composing 256 KiB of the densest YAML
#: (a flow list of one-digit numbers) takes about 90 MB and 2 s, so the bound also bounds the work.
MAX_BYTES = 256 * 1024

#: The most YAML nodes (scalars, lists, mappings; keys count) a document may expand to, each alias counted at
#: every use. The shipped specs expand to a few hundred; a billion-laughs bomb to 10**9 and more.
MAX_NODES = 100_000


class OverBound(ValueError):
    """A YAML text over one of the bounds (or recursive); the message says which bound and what is allowed."""


def check_size(n_bytes: int) -> None:
    """Refuse a text of more than ``MAX_BYTES`` bytes (call on the file's size, before reading it)."""
    if n_bytes > MAX_BYTES:
        raise OverBound(f"too large: {n_bytes} bytes; at most {MAX_BYTES} bytes ({MAX_BYTES // 1024} KiB) are allowed")


def _children(node: Any) -> list:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: Any, limit: int = MAX_NODES) -> int:
    """The number of nodes the composed graph ``root`` expands to, aliases counted at every use.

    The walk is iterative (a deep document cannot overflow the stack here) and memoised by node identity; it
    stops at the first node whose count passes ``limit`` and returns that count. A node that contains an
    alias to itself (a recursive document) is refused: it has no finite expansion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            open_nodes.discard(key)
            if sizes[key] > limit:
                return sizes[key]
            continue
        if key in sizes:
            continue
        if key in open_nodes:  # reached again while its own children are still being counted
            mark = node.start_mark
            raise OverBound(f"the node at line {mark.line + 1} holds an alias to itself; "
                           "a recursive document is not allowed")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def safe_load_bounded(text: str) -> Any:
    """``yaml.safe_load(text)``, after checking the text's size and the expanded size of its node graph.

    Raises ``OverBound`` (a ``ValueError``) with the bound and the allowed value, or PyYAML's ``YAMLError``
    for malformed text; memory stays bounded by the text's size either way.
    """
    import yaml

    check_size(len(text.encode("utf-8")))
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # PyYAML's composer recurses once per nesting level
            raise OverBound("too deeply nested for the YAML parser; a spec or config nests a few levels") from None
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_NODES:
            raise OverBound(f"too large: it expands to more than {MAX_NODES} YAML nodes (values, keys, lists, "
                            f"mappings; each alias counted at every use); at most {MAX_NODES} are allowed")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of a file; a missing, unreadable, binary, malformed or too large file is one line naming it
    (the bounds on size and alias expansion above).

    Args:
        path: the file.
        what: how the user gave it, for the message (``--config``, ``sweep spec``).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such file")
    if not path.is_file():
        raise ValueError(f"{what} {path}: not a file; give a YAML file")
    try:
        check_size(path.stat().st_size)  # before reading: a huge file is refused without loading it
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
                         "is not UTF-8); give a YAML file") from None
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    except OverBound as exc:
        raise ValueError(f"{what} {path}: {exc}") from None
    try:
        return safe_load_bounded(text)
    except OverBound as exc:
        raise ValueError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: not valid YAML: {yaml_problem(exc)}") from None


def yaml_problem(exc: Exception) -> str:
    """One line from a YAML error: the problem and where it is (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = (getattr(exc, "problem", None) or str(exc).splitlines()[0]).replace("'<stream end>'", "the end")
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem
