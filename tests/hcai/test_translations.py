"""CI's translation checks: every template's visible text is marked for translation, and the
Simplified Chinese catalogue has no untranslated or fuzzy entry."""

import ast
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.template.base import Lexer, TokenType

TEMPLATES = Path(settings.BASE_DIR) / "templates"
CATALOGUE = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"

# Text shown as it is in every language: product names and the like.
ALLOWED_TEXT = ("HCAI Keys", "Claude Code", "API", "HTTP", "HC", "USD", "powershell", "sh")

# Attributes whose values people read (or hear, from a screen reader).
VISIBLE_ATTRIBUTES = {"aria-label", "title", "placeholder", "alt", "data-label"}
# Elements whose text is code or data, not prose.
UNTRANSLATED_ELEMENTS = {"script", "style", "code", "pre", "kbd", "samp"}

# Where a template construct stood: not text, but not nothing either.
HOLE = "\ue000"
TRANSLATED_TAGS = {"trans", "translate"}
TRANSLATED_BLOCKS = {"blocktrans": "endblocktrans", "blocktranslate": "endblocktranslate"}


def template_text(source: str) -> str:
    """The template's literal text, each tag, variable and translated string a HOLE, comments
    and {% comment %} blocks gone."""
    parts: list[str] = []
    closing = None
    for token in Lexer(source).tokenize():
        if closing is not None:
            if token.token_type == TokenType.BLOCK and token.contents.split()[0] == closing:
                closing = None
            continue
        if token.token_type == TokenType.TEXT:
            parts.append(token.contents)
        elif token.token_type == TokenType.BLOCK:
            tag = token.contents.split()[0]
            if tag in TRANSLATED_BLOCKS:
                closing = TRANSLATED_BLOCKS[tag]
            elif tag == "comment":
                closing = "endcomment"
            elif tag == "block" and token.contents.split()[1].endswith("class"):
                # A block that fills in a class attribute (_table.html's, admin bodyclass): names.
                closing = "endblock"
            parts.append(HOLE)
        elif token.token_type == TokenType.VAR:
            parts.append(HOLE)
    return "".join(parts)


# A literal with words given to a filter or an include: {{ x|default:"no models" }},
# {% include ... with label="Delete" %} (_("...") marks one). A lower-case word alone is a
# name (a CSS class, noun="key", style="danger"), not text.
LITERAL_ARGUMENT = re.compile(r"""(default:|\b[a-z_]+=)(["'])([^"']*)\2""")


def literal_arguments(source: str) -> list[str]:
    found = []
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK and token.contents.split()[0] != "include":
            continue
        if token.token_type not in (TokenType.VAR, TokenType.BLOCK):
            continue
        for prefix, quote, value in LITERAL_ARGUMENT.findall(token.contents):
            if " " in value.strip() or any(character.isupper() for character in value):
                found.append(f"{prefix}{quote}{value}{quote}")
    return found


def has_words(text: str) -> bool:
    for allowed in ALLOWED_TEXT:
        text = re.sub(rf"(?<!\w){re.escape(allowed)}(?!\w)", "", text)
    return any(character.isalpha() for character in text.replace(HOLE, ""))


class _VisibleText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.hidden_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in UNTRANSLATED_ELEMENTS:
            self.hidden_depth += 1
        for name, value in attrs:
            # A placeholder without a space is an example value (claude-code-main), not prose.
            example = name == "placeholder" and " " not in value.strip()
            if name in VISIBLE_ATTRIBUTES and value and has_words(value) and not example:
                self.found.append(f'{name}="{value}"')

    def handle_endtag(self, tag):
        if tag in UNTRANSLATED_ELEMENTS and self.hidden_depth:
            self.hidden_depth -= 1

    def handle_data(self, data):
        if not self.hidden_depth and has_words(data):
            self.found.append(data.strip())


def unmarked_text(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    text = template_text(source)
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if has_words(line)]
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    return parser.found + literal_arguments(source)


def checked_templates() -> list[Path]:
    return sorted(path for pattern in ("**/*.html", "**/*.txt") for path in TEMPLATES.glob(pattern))


@pytest.mark.parametrize(
    "path", checked_templates(), ids=lambda path: path.relative_to(TEMPLATES).as_posix()
)
def test_every_visible_text_of_a_template_is_marked_for_translation(path):
    assert unmarked_text(path) == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("<p>Hello</p>", ["Hello"]),
        ('<p>{% translate "Hello" %}</p>', []),
        ("<p>{% blocktranslate %}Hi {{ name }}{% endblocktranslate %}</p>", []),
        ('<a title="Open">{{ x }}</a>', ['title="Open"']),
        ("<script>let a = 1;</script><code>export X=1</code>", []),
        ("<p>HCAI Keys · {{ x }} — 42%</p>", []),
        ("{% comment %}A note{% endcomment %}{# another #}", []),
        ('{{ models|default:"no models" }}', ['default:"no models"']),
        ('{{ models|default:_("no models") }}', []),
        ('{% include "x.html" with label="Delete" style="danger" %}', ['label="Delete"']),
        ('{% include "x.html" with label=_("Delete") noun="key" %}', []),
    ],
)
def test_the_template_check_finds_unmarked_text(tmp_path, source, found):
    path = tmp_path / "page.html"
    path.write_text(source)
    assert unmarked_text(path) == found


def catalogue_entries(po_text: str) -> list[dict]:
    """Each entry of a .po file: its references ("#:"), flags ("#,"), msgid and msgstrs."""
    entries = []
    for block in re.split(r"\n\s*\n", po_text.strip()):
        entry: dict = {"references": [], "flags": "", "msgid": "", "msgstr": []}
        section = None
        for line in block.splitlines():
            if line.startswith("#:"):
                entry["references"] += line[2:].split()
            elif line.startswith("#,"):
                entry["flags"] += line[2:]
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                value = ast.literal_eval(line)
                if section == "msgid":
                    entry["msgid"] += value
                elif section and section.startswith("msgstr"):
                    entry["msgstr"][-1] += value
            else:
                section, _, value = line.partition(" ")
                if section == "msgid":
                    entry["msgid"] = ast.literal_eval(value)
                elif section.startswith("msgstr"):
                    entry["msgstr"].append(ast.literal_eval(value))
        entries.append(entry)
    return entries


def test_the_chinese_catalogue_is_complete():
    checked = [entry for entry in catalogue_entries(CATALOGUE.read_text()) if entry["msgid"]]
    assert len(checked) > 100
    assert [entry["msgid"] for entry in checked if "fuzzy" in entry["flags"]] == []
    assert [entry["msgid"] for entry in checked if not all(entry["msgstr"])] == []
