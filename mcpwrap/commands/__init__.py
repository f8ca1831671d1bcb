"""The commands (cli.py dispatches, parser.py holds the parsers; one module per verb): they
may use every layer below."""
