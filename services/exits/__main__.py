"""``python -m services.exits``: the exits process."""

import sys

from services.exits.service import ExitsService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(ExitsService, "exits"))
