"""Basics every layer may use: errors, units, JSON text, hashing, atomic files, SQLite,
host names, pipes. They import nothing else of mcpwrap's."""
