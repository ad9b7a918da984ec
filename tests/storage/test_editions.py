"""The same migrations on every edition: community (PGlite test server), Apache, bare."""

from __future__ import annotations

from storage.edition import Edition
from storage.migrate import migrate, status
from tests.services import community_connection
from tests.storage.test_migrate import HYPERTABLES


def test_community_edition_is_detected_and_gets_hypertables() -> None:
    with community_connection() as conn:
        report = migrate(conn)
        assert report.server.edition == Edition.COMMUNITY
        st = status(conn)
        assert st.current_version == st.latest_version
        assert set(st.hypertables) == HYPERTABLES
        assert migrate(conn).applied == []
