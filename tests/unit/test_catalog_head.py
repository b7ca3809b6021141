from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from backupctl.catalog.store import HEAD_REVISION, MIGRATIONS, Catalog


def test_head_constant_matches_alembic() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_open_twice_and_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    assert Catalog.open(url).revision() == HEAD_REVISION
    assert Catalog.open(url).revision() == HEAD_REVISION
