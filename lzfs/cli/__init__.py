"""The `lzfs` command: one module per command (main.py holds the parser and exit statuses)."""
