# The source of its synchronous twin: edit this file, then run scripts/unasync.py.
"""The asyncio client, a module per job: :mod:`.client` (transport and chat), :mod:`.stream` (a
streamed chat) and :mod:`.resources` (sessions, jobs and models)."""
