"""Applications replicated by pmmc-ray: the interface and the default KV store."""

from .base import InvalidOperation, StateMachine
from .kv import KVStore, validate_kv_op

__all__ = ["InvalidOperation", "KVStore", "StateMachine", "validate_kv_op"]
