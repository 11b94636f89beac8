"""``python -m course_utils ...``: the command line lives in :mod:`course_utils.harness.cli`."""
import sys

from course_utils.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
