"""``python -m seqvae ...``: the same command as ``seqvae ...``."""

import sys

from seqvae.cli import main

sys.exit(main())
