"""MCP clients' config files: where each client keeps them, how it starts a server, and
the first start `wrap` tries."""
