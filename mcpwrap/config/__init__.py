"""The profile contract and where things live: loading and checking a profile, the project
it names, and mcpwrap's own directories."""
