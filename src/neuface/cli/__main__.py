import sys

from neuface.cli import main

sys.exit(main())
