"""`python -m unclip.cli`."""

import sys

from . import main

sys.exit(main())
