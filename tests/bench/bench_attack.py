"""Placeholder replaced below."""


def run(mode: str):
    return []
