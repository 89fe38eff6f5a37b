"""``python -m services.executor``: the executor process."""

import sys

from services.executor.service import ExecutorService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(ExecutorService, "executor"))
