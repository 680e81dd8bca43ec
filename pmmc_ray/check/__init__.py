"""Linearizability checking of recorded histories (WGL search with memoisation).

See `pmmc_ray.check.linearizability` for the algorithm and the models,
`pmmc_ray.check.history` for the history formats and
`pmmc_ray.check.lincheck_cli` for the ``lincheck`` subcommand.
"""

from pmmc_ray.check.history import (
    HistoryFormatError,
    Operation,
    dump_jsonl_lines,
    parse_jepsen,
    parse_jsonl,
    parse_porcupine_kv,
    write_jsonl,
)
from pmmc_ray.check.linearizability import (
    CAS_REGISTER_MODEL,
    KV_MODEL,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    PORCUPINE_KV_MODEL,
    UNKNOWN,
    CasRegisterModel,
    KvStoreModel,
    LinResult,
    Model,
    PorcupineKvModel,
    check,
)

__all__ = [
    "CAS_REGISTER_MODEL",
    "KV_MODEL",
    "LINEARIZABLE",
    "NOT_LINEARIZABLE",
    "PORCUPINE_KV_MODEL",
    "UNKNOWN",
    "CasRegisterModel",
    "HistoryFormatError",
    "KvStoreModel",
    "LinResult",
    "Model",
    "Operation",
    "PorcupineKvModel",
    "check",
    "dump_jsonl_lines",
    "parse_jepsen",
    "parse_jsonl",
    "parse_porcupine_kv",
    "write_jsonl",
]
