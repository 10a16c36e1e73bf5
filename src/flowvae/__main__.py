"""``python -m flowvae``: the ``flowvae`` command line, with the same arguments, output and exit status."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
