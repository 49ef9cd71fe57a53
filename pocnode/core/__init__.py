"""The protocol itself, pure: no asyncio, no sockets, no files, no clock reads.

Everything here takes its inputs as values (bytes, decoded objects, ``now`` in
milliseconds) and returns values or raises a :class:`~pocnode.core.errors.PocError`
whose ``code`` is a row of the error table in ``protocol/PROTOCOL.md``. The
daemon, the simulator, the offline auditor and the tests all drive this code.
"""
