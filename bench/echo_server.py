"""The benchmark's server: the least work an MCP server can do, so the figures show the
relay's cost and not the server's. Raw JSON-RPC over stdio, no SDK."""

import json
import sys

BLOB = "x" * (4 * 1024 * 1024)


def main() -> None:
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        method, msg_id = msg.get("method"), msg.get("id")
        if msg_id is None:
            continue
        if method == "initialize":
            res: object = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench", "version": "1"},
            }
        elif method == "tools/list":
            res = {
                "tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "blob")]
            }
        elif msg["params"]["name"] == "blob":
            res = {"content": [{"type": "text", "text": BLOB}]}
        else:
            res = {"content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}]}
        out.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": res}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
