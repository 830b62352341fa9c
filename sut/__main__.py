import sys

from sut.cli import main

sys.exit(main())
