"""``python -m adntn_lab``: the ``adntn-lab`` command line (how torchrun starts each rank)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
