"""Files on disk: the run-folder model (:mod:`.rundir`: every file name of a run and of a reproduction),
the one atomic writer (:mod:`.atomic`), the one freshness rule of records (:mod:`.records`) and the one
bounded YAML reader of user files (:mod:`.yamlfile`).

Nothing here imports torch at import time; checkpoints themselves are :mod:`anpvs.models.checkpoint`."""

from .atomic import append_text, atomic_stream, atomic_write, write_bytes, write_json, write_text
from .records import MISSING, fresh_record, read_json, stamp_record
from .rundir import ReproDir, RunDir

__all__ = ["MISSING", "ReproDir", "RunDir", "append_text", "atomic_stream", "atomic_write", "fresh_record", "read_json",
           "stamp_record", "write_bytes", "write_json", "write_text"]
