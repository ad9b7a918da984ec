import sys

from noc.cli import main

sys.exit(main())
