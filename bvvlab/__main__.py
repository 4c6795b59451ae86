"""`python -m bvvlab ...` (also what `torchrun -m bvvlab train ...` runs)."""

import sys

from bvvlab.cli import main

sys.exit(main())
