"""The "browser" of tests/test_oauth.py, set as $BROWSER: `python oauth_browser.py LOG URL`.

It writes a line to LOG first (a canary: a refusal test checks that it never ran), then
fetches URL over real HTTP and follows the authorization server's redirect to mcpwrap's
callback, as a browser whose user approves would.
"""

from __future__ import annotations

import sys
import urllib.request

log, url = sys.argv[1], sys.argv[2]
with open(log, "a", encoding="utf-8") as f:
    f.write("opened\n")
with urllib.request.urlopen(url, timeout=20) as response:  # follows the redirect
    response.read()
# A browser that writes to its stdout: mcpwrap must have closed its MCP pipe to it.
print("a browser's chatter on stdout", flush=True)
