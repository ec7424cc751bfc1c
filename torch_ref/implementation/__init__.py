"""The implementation under test: loading a plug-in (`--impl TARGET`), guarding every call into it
(copies in and out, a time limit, its failures told apart from the contract's) in plugin.py, and
checking what it returns against the contract (contract.py). The manual engine goes through the
same interface."""
