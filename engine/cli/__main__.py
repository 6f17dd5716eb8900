"""`python -m engine.cli`: how a background run and every torchrun rank start the engine."""

import sys

from engine.cli import main

sys.exit(main())
