"""``python -m classifier predict``: kept for scripts written against it; the command line lives in cli/.

The core imports no consumer: this module is only an entry point, run by ``python -m``, never imported.
"""

from __future__ import annotations

import sys

from cli.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
