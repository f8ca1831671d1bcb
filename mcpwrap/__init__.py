"""mcpwrap: run a stdio MCP server behind a capability profile and an audit log."""

__version__ = "0.1.0"
