"""``python -m services.feed``: the feed process."""

import sys

from services.feed.service import FeedService
from shared.runtime import main_wrapper

if __name__ == "__main__":
    sys.exit(main_wrapper(FeedService, "feed"))
