"""Shared pytest configuration: the ``slow`` marker (exhaustive sweeps; ``-m "not slow"`` skips them)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long exhaustive sweeps (deselect with -m 'not slow')")
