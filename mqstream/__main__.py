import sys

from mqstream.cli import main

sys.exit(main())
