"""GIN indexes of the full-text search (chat/search.py) on PostgreSQL; nothing elsewhere.

The indexed expressions are those ``SearchVector(field, config="simple")`` compiles to, so
the planner uses them for the search's ``@@``. Only the database has them (the models do not
declare them): SQLite has no ``to_tsvector`` and searches substrings.
"""

from django.db import migrations

INDEXES = {
    "chat_message_search": ("chat_message", "content"),
    "chat_session_title_search": ("chat_chatsession", "title"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"USING gin (to_tsvector('simple'::regconfig, COALESCE({column}, '')))"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0013_link_existing_messages")]

    operations = [migrations.RunPython(create, drop)]
