"""The implementation under test: loading a plug-in (`--impl TARGET`), guarding every call into it
(copies in and out, a time limit, its failures told apart from the contract's) in plugin.py, and
checking what it returns against the contract (contract.py). The manual engine goes through the
same interface.
Declared layouts and names (conventions.py) and the adapters for code whose loop is its own
(own_loop.py) are exported here and from torch_ref itself."""
from .contract import NOT_EXPOSED
from .conventions import Conventions
from .own_loop import from_batch_method, from_layers, from_loss_function

__all__ = ["NOT_EXPOSED", "Conventions", "from_batch_method", "from_layers", "from_loss_function"]
