"""The recorder: the ``ticks`` stream into Parquet session files per IST trading day, and raw
DhanHQ frame captures. See ``core`` for the file layout and formats, ``service`` for the shell."""
