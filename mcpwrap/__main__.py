"""`python -m mcpwrap` is the `mcpwrap` command."""

import sys

from mcpwrap.commands.cli import main

sys.exit(main())
