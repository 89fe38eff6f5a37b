"""``python -m services.entries``: the entries process."""

import sys

from services.entries.service import EntriesService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(EntriesService, "entries"))
