"""Who may call what: scoped tokens, their checks on each call, and secrets in the OS
keyring."""
