"""Atlassian Document Format (ADF) <-> plain text, and the HTML of ``renderedFields``.

REST v3 carries rich text (``description``, ``environment``, comment bodies, text-area custom
fields) as ADF documents; v2 carries wiki-markup strings. The simulator stores whichever form a
client wrote and converts on read, so a client reading with the version it wrote with gets back
exactly what it sent. Conversion between the two is a faithful subset, both ways: paragraphs,
hard breaks, headings, bullet/ordered lists, code blocks, block quotes, panels, rules, mentions,
inline cards and ``link``/``code``/``strong``/``em``/``strike`` marks (emoji and other nodes
go to wiki as their text only).
"""

from __future__ import annotations

import html
import re
from typing import Any

ADF_ERROR = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
STRING_ERROR = "Operation value must be a string"


def is_adf(value: Any) -> bool:
    """A minimally valid ADF document: ``{"type": "doc", "version": 1, "content": [...]}``."""
    return (
        isinstance(value, dict)
        and value.get("type") == "doc"
        and value.get("version") == 1
        and isinstance(value.get("content"), list)
        and all(
            isinstance(node, dict) and isinstance(node.get("type"), str)
            for node in value["content"]
        )
    )


def text_to_adf(text: str) -> dict[str, Any]:
    """Plain/wiki text to ADF: blank lines separate paragraphs, single newlines become
    ``hardBreak`` nodes. The empty string gives an empty document."""
    content: list[dict[str, Any]] = []
    if text == "":
        return {"type": "doc", "version": 1, "content": content}
    for block in text.replace("\r\n", "\n").split("\n\n"):
        inline: list[dict[str, Any]] = []
        for index, line in enumerate(block.split("\n")):
            if index:
                inline.append({"type": "hardBreak"})
            if line:
                inline.append({"type": "text", "text": line})
        paragraph: dict[str, Any] = {"type": "paragraph"}
        if inline:
            paragraph["content"] = inline
        content.append(paragraph)
    return {"type": "doc", "version": 1, "content": content}


def adf_to_text(doc: Any) -> str:
    """ADF to the wiki-markup string v2 would show. Unknown nodes contribute their text."""
    if not isinstance(doc, dict):
        return "" if doc is None else str(doc)
    blocks = [_block(node, 0) for node in doc.get("content") or [] if isinstance(node, dict)]
    return "\n\n".join(blocks)


def _inline(nodes: Any) -> str:
    out: list[str] = []
    for node in nodes or []:
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        attrs = node.get("attrs") or {}
        if kind == "text":
            out.append(_marked(str(node.get("text", "")), node.get("marks") or []))
        elif kind == "hardBreak":
            out.append("\n")
        elif kind == "mention":
            out.append(f"[~accountid:{attrs.get('id', '')}]")
        elif kind == "emoji":
            out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
        elif kind == "inlineCard":
            out.append(f"[{attrs.get('url', '')}|{attrs.get('url', '')}|smart-link]")
        else:
            out.append(_inline(node.get("content")))
    return "".join(out)


def _marked(text: str, marks: list[Any]) -> str:
    for mark in marks:
        if not isinstance(mark, dict):
            continue
        kind = mark.get("type")
        if kind == "strong":
            text = f"*{text}*"
        elif kind == "em":
            text = f"_{text}_"
        elif kind == "strike":
            text = f"-{text}-"
        elif kind == "code":
            text = "{{" + text + "}}"
        elif kind == "link":
            href = (mark.get("attrs") or {}).get("href", "")
            text = f"[{text}|{href}]"
    return text


def _block(node: dict[str, Any], depth: int) -> str:
    kind = node.get("type")
    attrs = node.get("attrs") or {}
    content = node.get("content") or []
    if kind == "paragraph":
        return _inline(content)
    if kind == "heading":
        return f"h{attrs.get('level', 1)}. {_inline(content)}"
    if kind in ("bulletList", "orderedList"):
        bullet = "*" if kind == "bulletList" else "#"
        lines = []
        for item in content:
            parts = [_block(child, depth + 1) for child in item.get("content") or []]
            lines.append(f"{bullet * (depth + 1)} " + "\n".join(p for p in parts if p))
        return "\n".join(lines)
    if kind == "codeBlock":
        lang = attrs.get("language")
        head = f"{{code:{lang}}}" if lang else "{code}"
        return f"{head}{_inline(content)}{{code}}"
    if kind == "blockquote":
        return "{quote}" + "\n\n".join(_block(c, depth) for c in content) + "{quote}"
    if kind == "rule":
        return "----"
    if kind == "panel":
        return "{panel}" + "\n\n".join(_block(c, depth) for c in content) + "{panel}"
    if content and isinstance(content[0], dict) and content[0].get("type") == "text":
        return _inline(content)
    return "\n\n".join(_block(c, depth) for c in content if isinstance(c, dict))


def to_text(value: Any) -> str | None:
    """Stored rich text (string or ADF) as v2 text; None stays None."""
    if value is None:
        return None
    return value if isinstance(value, str) else adf_to_text(value)


def to_adf(value: Any) -> dict[str, Any] | None:
    """Stored rich text (string or ADF) as a v3 ADF document; None stays None. Text written
    through v2 is wiki markup and becomes the ADF it means (what Jira's converter does)."""
    if value is None:
        return None
    return value if isinstance(value, dict) else wiki_to_adf(str(value))


# -- wiki markup -> ADF -------------------------------------------------------------------------

_INLINE = re.compile(
    r"(?P<code>\{\{(?P<code_text>.+?)\}\})"
    r"|(?P<mention>\[~accountid:(?P<account>[^\]]+)\])"
    r"|(?P<card>\[(?P<card_url>[^|\]]+)\|[^|\]]+\|smart-link\])"
    r"|(?P<link>\[(?:(?P<link_text>[^|\]]+)\|)?(?P<href>(?:https?|mailto|ftp)[^\]|]+)\])"
    r"|(?P<mark>(?<![\w*_-])(?P<sym>[*_-])(?=\S)(?P<marked>.+?)(?<=\S)(?P=sym)(?![\w*_-]))"
)
_MARKS = {"*": "strong", "_": "em", "-": "strike"}
_LIST = re.compile(r"^(?P<bullets>[*#]+) (?P<text>.*)$")
_HEADING = re.compile(r"^h(?P<level>[1-6])\. (?P<text>.*)$")
_CODE = re.compile(r"^\{code(?::(?P<lang>[\w+#-]+))?\}(?P<rest>.*)$", re.DOTALL)


def _with_mark(nodes: list[dict[str, Any]], mark: dict[str, Any]) -> list[dict[str, Any]]:
    for node in nodes:
        if node.get("type") == "text":
            node["marks"] = [*node.get("marks", []), mark]
    return nodes


def wiki_inline(text: str) -> list[dict[str, Any]]:
    """Inline wiki markup: ``*strong*``, ``_em_``, ``-strike-``, ``{{code}}``,
    ``[text|url]``, ``[url]``, ``[~accountid:ID]``; a newline is a ``hardBreak``."""
    out: list[dict[str, Any]] = []
    for index, line in enumerate(text.split("\n")):
        if index:
            out.append({"type": "hardBreak"})
        pos = 0
        for m in _INLINE.finditer(line):
            if m.start() > pos:
                out.append({"type": "text", "text": line[pos : m.start()]})
            pos = m.end()
            if m.group("code"):
                out.append(
                    {"type": "text", "text": m.group("code_text"), "marks": [{"type": "code"}]}
                )
            elif m.group("mention"):
                account = m.group("account")
                out.append({"type": "mention", "attrs": {"id": account, "text": f"@{account}"}})
            elif m.group("card"):
                out.append({"type": "inlineCard", "attrs": {"url": m.group("card_url")}})
            elif m.group("link"):
                href = m.group("href")
                inner = wiki_inline(m.group("link_text") or href)
                out.extend(_with_mark(inner, {"type": "link", "attrs": {"href": href}}))
            else:
                inner = wiki_inline(m.group("marked"))
                out.extend(_with_mark(inner, {"type": _MARKS[m.group("sym")]}))
        if pos < len(line):
            out.append({"type": "text", "text": line[pos:]})
    return out


def _paragraph(lines: list[str]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "paragraph"}
    inline = wiki_inline("\n".join(lines))
    if inline:
        node["content"] = inline
    return node


def _list_node(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Nested lists from ``(bullets, text)`` lines, e.g. ``("*", "a"), ("**", "b")``."""
    kind = "bulletList" if items[0][0][-1] == "*" else "orderedList"
    depth = len(items[0][0])
    node: dict[str, Any] = {"type": kind, "content": []}
    i = 0
    while i < len(items):
        _, text = items[i]
        item: dict[str, Any] = {"type": "listItem", "content": [_paragraph([text])]}
        j = i + 1
        while j < len(items) and len(items[j][0]) > depth:
            j += 1
        if j > i + 1:
            item["content"].append(_list_node(items[i + 1 : j]))
        node["content"].append(item)
        i = j
    return node


def _until(lines: list[str], start: int, closing: str) -> tuple[str, int]:
    """The text from ``lines[start]`` up to ``closing`` (which may end any line); the index of
    the line after it. An unclosed block runs to the end."""
    collected: list[str] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if closing in line:
            collected.append(line[: line.index(closing)])
            return "\n".join(collected), i + 1
        collected.append(line)
    return "\n".join(collected), len(lines)


def wiki_blocks(text: str) -> list[dict[str, Any]]:
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[dict[str, Any]] = []
    para: list[str] = []
    items: list[tuple[str, str]] = []

    def flush() -> None:
        if para:
            blocks.append(_paragraph(para))
            para.clear()
        if items:
            blocks.append(_list_node(list(items)))
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        code = _CODE.match(line)
        if code:
            flush()
            lines[i] = code.group("rest")
            body, i = _until(lines, i, "{code}")
            node: dict[str, Any] = {"type": "codeBlock"}
            if code.group("lang"):
                node["attrs"] = {"language": code.group("lang")}
            if body:
                node["content"] = [{"type": "text", "text": body}]
            blocks.append(node)
            continue
        for tag, kind in (("{quote}", "blockquote"), ("{panel}", "panel")):
            if line.startswith(tag):
                flush()
                lines[i] = line[len(tag) :]
                body, i = _until(lines, i, tag)
                node = {"type": kind, "content": wiki_blocks(body) or [{"type": "paragraph"}]}
                if kind == "panel":
                    node["attrs"] = {"panelType": "info"}
                blocks.append(node)
                break
        else:
            heading = _HEADING.match(line)
            listed = _LIST.match(line)
            if heading:
                flush()
                node = {"type": "heading", "attrs": {"level": int(heading.group("level"))}}
                inline = wiki_inline(heading.group("text"))
                if inline:
                    node["content"] = inline
                blocks.append(node)
            elif line.strip() == "----":
                flush()
                blocks.append({"type": "rule"})
            elif listed and not para:
                if items and items[0][0][0] != listed.group("bullets")[0]:
                    flush()
                items.append((listed.group("bullets"), listed.group("text")))
            elif not line.strip():
                flush()
            else:
                if items:
                    flush()
                para.append(line)
            i += 1
    flush()
    return blocks


def wiki_to_adf(text: str) -> dict[str, Any]:
    """Wiki markup (what v2 writes) to the ADF document v3 returns for it: paragraphs (blank
    lines), hard breaks, headings, nested bullet/numbered lists, ``{code[:lang]}``,
    ``{quote}``, ``{panel}``, ``----`` and the inline marks of :func:`wiki_inline`."""
    if text == "":
        return {"type": "doc", "version": 1, "content": []}
    return {"type": "doc", "version": 1, "content": wiki_blocks(text)}


def to_html(value: Any) -> str | None:
    """``renderedFields`` HTML: one ``<p>`` per paragraph, ``<br/>`` for line breaks."""
    text = to_text(value)
    if text is None:
        return None
    paragraphs = [html.escape(p).replace("\n", "<br/>\n") for p in text.split("\n\n")]
    return "".join(f"<p>{p}</p>" for p in paragraphs)
