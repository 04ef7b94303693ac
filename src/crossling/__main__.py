"""`python -m crossling` — same as the `crossling` console script."""
import sys

from crossling.cli import main

sys.exit(main())
