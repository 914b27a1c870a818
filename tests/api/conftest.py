"""Fixtures the API tests share."""

import pytest

from tests.conftest import _forget_broker_state


@pytest.fixture
def empty_broker():
    """No queued task, ready message or drain flag of another test, before and after."""
    _forget_broker_state()
    yield
    _forget_broker_state()
