"""``python -m services.recorder``: the recorder process, and its offline tools.

    python -m services.recorder                             run the recorder (supervisord)
    python -m services.recorder --compact DAY [--dir DIR]   merge DAY's parts into DAY.parquet
    python -m services.recorder --raw-to-parquet RAW OUT    decode a raw capture into a session file

``main(argv)`` is what ``scalper record ...`` should call. The recording directory defaults as
in :func:`services.recorder.service.record_dir`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.recorder.service import RecorderService, Recordings, raw_to_parquet, record_dir
from shared.config import load_env
from shared.errors import ConfigError
from shared.runtime import main_wrapper


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scalper record", description="tick recorder")
    p.add_argument("--compact", metavar="DAY", help="merge the parts of DAY (YYYY-MM-DD)")
    p.add_argument("--raw-to-parquet", nargs=2, metavar=("RAW", "OUT"),
                   help="decode a raw DhanHQ capture into a replayable session file")
    p.add_argument("--dir", help="recording directory (default: SCALPER_RECORD_DIR or run/<ns>/recordings)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        return main_wrapper(RecorderService, "recorder")
    a = _parser().parse_args(args)
    if a.raw_to_parquet:
        raw, out = a.raw_to_parquet
        conv = raw_to_parquet(raw, out)
        print(f"{conv.path}: {conv.rows} ticks, {conv.packet_errors} malformed packets skipped")
        return 0
    if a.compact:
        try:
            root = Path(a.dir) if a.dir else record_dir(load_env())
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        try:
            res = Recordings(root).compact(a.compact)
        except FileNotFoundError as exc:
            print(f"scalper record: {exc}", file=sys.stderr)
            return 1
        print(f"{res.path}: {res.rows} ticks from {res.parts} parts, "
              f"{res.duplicates} duplicates removed")
        return 0
    _parser().print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
