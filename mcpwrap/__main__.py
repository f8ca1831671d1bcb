"""`python -m mcpwrap` is the `mcpwrap` command."""

import sys

from mcpwrap.cli import main

sys.exit(main())
