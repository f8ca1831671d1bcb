"""`mcpwrap demo`: the bundled server, profile and driver."""

from mcpwrap.commands.demo.driver import run_demo

__all__ = ["run_demo"]
