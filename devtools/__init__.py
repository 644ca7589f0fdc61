"""Development tools: the local services and child processes of `make run`, `make test` and
`make bench`.

No Django import anywhere in this package at module level: it runs before settings exist
(it starts the servers that the settings then point at).
"""
