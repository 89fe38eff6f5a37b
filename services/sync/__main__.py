"""``python -m services.sync``: the sync process."""

import sys

from services.sync.service import SyncService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(SyncService, "sync"))
