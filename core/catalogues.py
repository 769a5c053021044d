"""Compiling the translation catalogues (locale/*/LC_MESSAGES/*.po) into the .mo files Django
reads, without GNU gettext: the quickstart promises nothing to install but Python.

The logic of CPython's Tools/i18n/msgfmt.py: each entry (msgctxt, msgid, msgid_plural,
msgstr[n]) written to a GNU .mo file. Fuzzy and untranslated entries are left out, as msgfmt
leaves them out, so Django shows the English source for them.
"""

import ast
import struct
from pathlib import Path


def catalogue_messages(po_text: str) -> dict[bytes, bytes]:
    """{msgid: msgstr} of a .po file's translated, non-fuzzy entries (and its header), as a .mo
    keys them: "context\\x04msgid", and "singular\\0plural" for plural forms."""
    messages: dict[bytes, bytes] = {}
    entry: dict[str, str] = {}
    fuzzy = False
    section = ""

    def flush() -> None:
        if "msgid" in entry and not fuzzy:
            msgid = entry["msgid"]
            if "msgid_plural" in entry:
                msgid += "\0" + entry["msgid_plural"]
                forms = [entry[key] for key in sorted(entry) if key.startswith("msgstr[")]
                msgstr, translated = "\0".join(forms), all(forms)
            else:
                msgstr = entry.get("msgstr", "")
                translated = bool(msgstr)
            if "msgctxt" in entry:
                msgid = entry["msgctxt"] + "\x04" + msgid
            if translated:
                messages[msgid.encode()] = msgstr.encode()

    for line in [*po_text.splitlines(), ""]:
        line = line.strip()
        if line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            entry[section] += ast.literal_eval(line)
        elif line:
            keyword, _, value = line.partition(" ")
            if keyword in ("msgctxt", "msgid") and section.startswith("msgstr"):
                flush()
                entry, fuzzy = {}, fuzzy and keyword == "msgctxt"
            section = keyword
            entry[section] = ast.literal_eval(value)
        elif section.startswith("msgstr"):
            flush()
            entry, fuzzy, section = {}, False, ""
    return messages


def mo_bytes(po_text: str) -> bytes:
    """The GNU .mo file (little-endian, no hash table) of a .po file's text."""
    messages = catalogue_messages(po_text)
    ids = sorted(messages)
    keys_start = 7 * 4 + 16 * len(ids)
    id_data = b"".join(msgid + b"\0" for msgid in ids)
    values_start = keys_start + len(id_data)
    key_table, value_table = [], []
    id_offset = str_offset = 0
    for msgid in ids:
        key_table += [len(msgid), keys_start + id_offset]
        value_table += [len(messages[msgid]), values_start + str_offset]
        id_offset += len(msgid) + 1
        str_offset += len(messages[msgid]) + 1
    header = struct.pack("<7I", 0x950412DE, 0, len(ids), 7 * 4, 7 * 4 + 8 * len(ids), 0, 0)
    tables = struct.pack(f"<{len(key_table) + len(value_table)}I", *key_table, *value_table)
    str_data = b"".join(messages[msgid] + b"\0" for msgid in ids)
    return header + tables + id_data + str_data


def compile_catalogues(locale_dirs: list) -> list[Path]:
    """Writes each .po file's .mo beside it when missing or older; returns the files written."""
    written = []
    for locale_dir in locale_dirs:
        for po_path in sorted(Path(locale_dir).glob("*/LC_MESSAGES/*.po")):
            mo_path = po_path.with_suffix(".mo")
            if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
                continue
            mo_path.write_bytes(mo_bytes(po_path.read_text(encoding="utf-8")))
            written.append(mo_path)
    return written
