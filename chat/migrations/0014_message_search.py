"""Indexes of the search (chat/search.py) on PostgreSQL; nothing elsewhere.

GIN indexes of ``to_tsvector('simple', ...)`` for the full-text match, and, where the
``pg_trgm`` extension is there or may be installed (it is "trusted" since PostgreSQL 13: a
database owner may create it), trigram GIN indexes of ``UPPER(...)`` for the substring match
(Django's ``icontains`` is ``UPPER(col) LIKE UPPER(%s)``). The two sides of the search's ``OR``
are then both indexed. Without ``pg_trgm`` the search works the same, scanning the
organisation's rows for substrings.

The indexed expressions are those the search compiles to, so the planner uses them
(tests/test_search.py checks the plan). Only the database has them (the models do not declare
them): SQLite has no ``to_tsvector`` and searches substrings by scanning.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

COLUMNS = {"chat_message": "content", "chat_chatsession": "title"}
FULL_TEXT = {"chat_message": "chat_message_search", "chat_chatsession": "chat_session_title_search"}
TRIGRAMS = {"chat_message": "chat_message_trigram", "chat_chatsession": "chat_session_trigram"}


def trigrams_available(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        if cursor.fetchone() is None:
            return False
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        logger.warning("pg_trgm not installed (%s): substring search will scan", exc)
        return False
    return True


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, column in COLUMNS.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {FULL_TEXT[table]} ON {table} "
            f"USING gin (to_tsvector('simple'::regconfig, COALESCE({column}, '')))"
        )
    if trigrams_available(schema_editor):
        for table, column in COLUMNS.items():
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {TRIGRAMS[table]} ON {table} "
                f"USING gin (UPPER({column}) gin_trgm_ops)"
            )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in [*FULL_TEXT.values(), *TRIGRAMS.values()]:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0013_link_existing_messages")]

    operations = [migrations.RunPython(create, drop)]
