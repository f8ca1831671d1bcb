"""The supply chain: what a server is made of (artifacts), the lock that pins it and its
tools, the store mcpwrap installs locked versions into, and the gate that checks tool
definitions against the lock at run time."""
