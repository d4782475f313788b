"""Atlassian Document Format (ADF) <-> plain text, and the HTML of ``renderedFields``.

REST v3 carries rich text (``description``, ``environment``, comment bodies, text-area custom
fields) as ADF documents; v2 carries wiki-markup strings. The simulator stores whichever form a
client wrote and converts on read, so a client reading with the version it wrote with gets back
exactly what it sent. Conversion between the two is a faithful subset: paragraphs, hard breaks,
headings, bullet/ordered lists, code blocks, block quotes, rules, mentions, emoji, inline cards
and ``link``/``code``/``strong``/``em``/``strike`` marks.
"""

from __future__ import annotations

import html
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
    """Stored rich text (string or ADF) as a v3 ADF document; None stays None."""
    if value is None:
        return None
    return value if isinstance(value, dict) else text_to_adf(str(value))


def to_html(value: Any) -> str | None:
    """``renderedFields`` HTML: one ``<p>`` per paragraph, ``<br/>`` for line breaks."""
    text = to_text(value)
    if text is None:
        return None
    paragraphs = [html.escape(p).replace("\n", "<br/>\n") for p in text.split("\n\n")]
    return "".join(f"<p>{p}</p>" for p in paragraphs)
