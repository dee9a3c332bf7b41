"""``python -m cli COMMAND``: the command line, a consumer of the core package like the server.

python -m cli predict PATH... [options]     classify files offline (cli/predict.py)
"""

from __future__ import annotations

import sys

from cli import predict

COMMANDS = {"predict": predict.main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:], prog=f"python -m cli {argv[0]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
