import sys

from sut.cli import entry_point

sys.exit(entry_point())
