"""``python -m classroom <step>`` (what ``python3 dev.py classroom`` runs)."""

import sys

from .grading import main

sys.exit(main())
