"""Run the test suite; a run that collects no test is a failure, never a pass."""
import sys

import pytest

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:])
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("error: no tests were collected", file=sys.stderr)
        code = 1
    sys.exit(int(code))
