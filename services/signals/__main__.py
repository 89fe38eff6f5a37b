"""``python -m services.signals``: the signals process."""

import sys

from services.signals.service import SignalsService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(SignalsService, "signals"))
