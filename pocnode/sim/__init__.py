"""A deterministic simulator of a pocnode federation (issue 8, item 4).

Many :class:`pocnode.core.engine.Engine` instances, the node's own protocol engine,
run over an in-memory network in virtual time: the daemon and the simulator are two
adapters of one engine, so what the simulator shows is what the daemon does.

* :mod:`pocnode.sim.network`: the virtual clock and the network (latency, loss,
  partitions);
* :mod:`pocnode.sim.store`: an in-memory store with the SQLite store's contract;
* :mod:`pocnode.sim.runner`: nodes, the executor of effects, Byzantine behaviours;
* :mod:`pocnode.sim.experiment`: the convergence experiment of ``pocnode simulate``;
* :mod:`pocnode.sim.report`: figures, the theory beside them, table, JSON and chart.

Same seed, same run: keys, salts, every random choice and the network's fate derive
from the seed, and virtual time starts at a fixed instant. One thing does not: HPKE
sealing (consent messages, bilateral values) draws its randomness inside OpenSSL. The
experiment of ``pocnode simulate`` publishes no consent, so nothing sealed reaches its
figures; a scenario that does (the differential test) compares event ids and
disclosure digests, which sealing does not change, except the ids of the consent events
themselves, which that test replays byte for byte.
"""
