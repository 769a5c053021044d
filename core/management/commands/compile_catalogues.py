"""`manage.py compile_catalogues`: the translation catalogues' .mo files, with or without GNU
gettext. With msgfmt on the PATH this is Django's compilemessages (which also checks each
entry's format); without it (a laptop with only Python, as the quickstart promises) the same
files are written by core.catalogues."""

import shutil

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from core.catalogues import compile_catalogues


class Command(BaseCommand):
    help = (
        "Compile locale/*/LC_MESSAGES/*.po into .mo files (GNU msgfmt if installed, else Python)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--python", action="store_true", help="Compile in Python even if msgfmt is installed."
        )

    def handle(self, *args, python: bool = False, **options):
        if not python and shutil.which("msgfmt"):
            # Only the project's catalogues: not those of the packages in a local .venv.
            call_command(
                "compilemessages",
                ignore_patterns=[".venv", "var", "bench"],
                verbosity=options["verbosity"],
            )
            return
        written = compile_catalogues(settings.LOCALE_PATHS)
        if options["verbosity"]:
            self.stdout.write(f"Compiled {len(written)} catalogue(s) in Python.")
