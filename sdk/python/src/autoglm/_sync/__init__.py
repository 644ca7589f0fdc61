# Generated from _async/__init__.py by scripts/unasync.py: edit that file, then run it.
"""The synchronous client, a module per job: :mod:`.client` (transport and chat), :mod:`.stream` (a
streamed chat) and :mod:`.resources` (sessions, jobs and models)."""
