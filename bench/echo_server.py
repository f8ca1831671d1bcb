"""The benchmark's server: the least work an MCP server can do, so the figures show the
relay's cost and not the server's. Raw JSON-RPC over stdio, no SDK, stdlib only.

Each request is small, so it is parsed with json.loads; every reply is built from bytes
encoded once at start. The 4 MiB `blob` reply is a pre-encoded template with only the id
spliced in, written in three pieces (never copied into one 4 MiB string per call): the
server serves it about as fast as a pipe takes it, so a relay in front of it is what is
measured, not the server's json.dumps of 4 MiB.
"""

import json
import sys

BLOB_BYTES = 4 * 1024 * 1024
HEAD = b'{"jsonrpc":"2.0","id":'
# The blob's reply after its id: the whole 4 MiB result, encoded once.
BLOB_TAIL = b',"result":{"content":[{"type":"text","text":"' + b"x" * BLOB_BYTES + b'"}]}}\n'
ECHO_MID = b',"result":{"content":[{"type":"text","text":'
ECHO_END = b"}]}}\n"
INIT_TAIL = (
    b',"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},'
    b'"serverInfo":{"name":"bench","version":"1"}}}\n'
)
LIST_TAIL = (
    b',"result":{"tools":['
    b'{"name":"echo","inputSchema":{"type":"object"}},'
    b'{"name":"blob","inputSchema":{"type":"object"}}]}}\n'
)


def main() -> None:
    out = sys.stdout.buffer
    dumps = json.dumps
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        msg_id = msg.get("id")
        if msg_id is None:
            continue  # a notification: no reply
        head = HEAD + dumps(msg_id).encode()
        method = msg.get("method")
        if method == "tools/call":
            params = msg["params"]
            if params["name"] == "blob":
                # Large writes bypass BufferedWriter's buffer: no 4 MiB copy per call.
                out.write(head)
                out.write(BLOB_TAIL)
            else:
                text = dumps(params["arguments"]["text"]).encode()
                out.write(head + ECHO_MID + text + ECHO_END)
        elif method == "initialize":
            out.write(head + INIT_TAIL)
        elif method == "tools/list":
            out.write(head + LIST_TAIL)
        else:
            out.write(head + b',"error":{"code":-32601,"message":"method not found"}}\n')
        out.flush()


if __name__ == "__main__":
    main()
