"""Build hook: the checkout's top-level ``sql/`` is the one source of the SQL, and a built
package carries a copy of it as ``nexus/sql/`` (read by ``nexus.db.SQL_DIR``), so a
non-editable ``pip install .`` runs migrations from any directory.  Everything else is in
setup.cfg."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SQL_SOURCE = Path(__file__).resolve().parent / "sql"


class build_py_with_sql(build_py):  # noqa: N801  (a setuptools command class)
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads sql/ from the checkout itself
        target = Path(self.build_lib) / "nexus" / "sql"
        for source in sorted(SQL_SOURCE.rglob("*.sql")):
            dest = target / source.relative_to(SQL_SOURCE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)


setup(cmdclass={"build_py": build_py_with_sql})
