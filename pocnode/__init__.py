"""pocnode: a federated peer-to-peer directory of government Points of Contact."""

__version__ = "0.1.0"
