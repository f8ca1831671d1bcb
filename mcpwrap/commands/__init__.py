"""The commands (cli.py parses; one module per verb): they may use every layer below."""
