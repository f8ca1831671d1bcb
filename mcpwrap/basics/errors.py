"""The exception tree. The CLI is the only place that turns these into messages.

MCPWrapError            anything mcpwrap reports to a person and exits on
  ProfileError          a profile that does not load or validate (names file:line: key)
  DiscoveryError        no profile found for a name or a server command
  AuditError            an audit log that cannot be opened, written or read
  UsageError            a command line that does not make sense
  LockError             a lock file that does not load, or a server that no longer matches it
"""


class MCPWrapError(Exception):
    """Base of every error mcpwrap reports to a person; the message says what and where."""

    exit_code = 2


class ProfileError(MCPWrapError):
    """A profile that does not parse or validate."""


class DiscoveryError(MCPWrapError):
    """No profile could be found."""


class AuditError(MCPWrapError):
    """The audit log could not be written or read."""


class UsageError(MCPWrapError):
    """Arguments that do not fit together."""


class LockError(MCPWrapError):
    """A lock file that does not load, or a server that no longer matches its lock."""
