import sys

from warmfast.cli import console_main

sys.exit(console_main())
