"""``python -m reprise.cli``: the same as the ``reprise`` command."""

import sys

from reprise.cli import main

sys.exit(main())
