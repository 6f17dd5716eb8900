import sys

from lightlm_tui.launcher import main

sys.exit(main())
