"""`python -m ptychopinn ...` (also what `torchrun -m ptychopinn` runs)."""
import sys

from ptychopinn.cli import main

if __name__ == "__main__":
    sys.exit(main())
