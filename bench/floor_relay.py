"""The floor: the least a Python relay between two stdio peers can do. Two threads, each
parses every line with json.loads and forwards the original bytes; no policy, no audit.

    python bench/floor_relay.py CMD ...

bench/run.py measures it beside mcpwrap, so mcpwrap's own cost can be told from the
cost of one more process and two more wake-ups per round trip.
"""

import json
import os
import subprocess
import sys
import threading


def pump(src: int, dst: int) -> None:
    buf = b""
    while chunk := os.read(src, 1 << 20):
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            json.loads(line)
            os.write(dst, line + b"\n")


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    threading.Thread(target=pump, args=(child.stdout.fileno(), 1), daemon=True).start()
    pump(0, child.stdin.fileno())
    child.stdin.close()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
