"""core.catalogues: the .mo files the quickstart builds in Python when GNU gettext is missing."""

import gettext
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from core.catalogues import compile_catalogues, mo_bytes

SAMPLE = r"""msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=1; plural=0;\n"

#: keys/forms.py:1
msgid "Update"
msgstr "更新"

msgctxt "navigation"
msgid "Main"
msgstr "主导航"

#, python-format
msgid "%(counter)s key"
msgid_plural "%(counter)s keys"
msgstr[0] "%(counter)s 个密钥"

msgid "Untranslated"
msgstr ""

#, fuzzy
msgid "Fuzzy"
msgstr "模糊"

msgid ""
"A long "
"message"
msgstr ""
"一条"
"长消息"
"""


def test_translated_entries_are_compiled_and_the_rest_left_out():
    catalogue = gettext.GNUTranslations(io.BytesIO(mo_bytes(SAMPLE)))

    assert catalogue.gettext("Update") == "更新"
    assert catalogue.pgettext("navigation", "Main") == "主导航"
    assert catalogue.ngettext("%(counter)s key", "%(counter)s keys", 3) == "%(counter)s 个密钥"
    assert catalogue.gettext("A long message") == "一条长消息"
    assert catalogue.gettext("Untranslated") == "Untranslated"
    assert catalogue.gettext("Fuzzy") == "Fuzzy"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext is not installed")
def test_the_project_catalogue_compiles_as_gnu_msgfmt_compiles_it(tmp_path):
    po = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    subprocess.run(["msgfmt", "-o", tmp_path / "gnu.mo", po], check=True)

    gnu = gettext.GNUTranslations(io.BytesIO((tmp_path / "gnu.mo").read_bytes()))
    ours = gettext.GNUTranslations(io.BytesIO(mo_bytes(po.read_text(encoding="utf-8"))))

    assert len(ours._catalog) > 300
    # GNU msgfmt drops the header's POT-Creation-Date; every message is the same.
    assert {k: v for k, v in ours._catalog.items() if k} == {
        k: v for k, v in gnu._catalog.items() if k
    }
    assert ours.plural(5) == gnu.plural(5) == 0


def test_only_missing_or_stale_files_are_written(tmp_path):
    messages = tmp_path / "zh_Hans" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    (messages / "django.po").write_text(SAMPLE, encoding="utf-8")

    assert compile_catalogues([tmp_path]) == [messages / "django.mo"]
    assert compile_catalogues([tmp_path]) == []
