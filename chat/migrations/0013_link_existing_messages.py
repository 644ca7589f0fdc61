"""Existing conversations were linear: each message follows the one before it, and the last
one is the current branch's end. Nothing stored changes otherwise."""

from django.db import migrations


def link(apps, schema_editor):
    ChatSession = apps.get_model("chat", "ChatSession")
    Message = apps.get_model("chat", "Message")
    for session_id in ChatSession.objects.values_list("id", flat=True).iterator():
        previous = None
        for message in Message.objects.filter(session_id=session_id).order_by("created_at", "id"):
            if previous is not None:
                Message.objects.filter(pk=message.pk).update(parent_id=previous)
            previous = message.pk
        if previous is not None:
            ChatSession.objects.filter(pk=session_id).update(current_message_id=previous)


class Migration(migrations.Migration):
    dependencies = [("chat", "0012_tree_share_attachments")]

    operations = [migrations.RunPython(link, migrations.RunPython.noop)]
