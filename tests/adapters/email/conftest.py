"""The MLLP intake fixture (registered organisations) for the e-mail tests too."""

from tests.adapters.mllp.conftest import intake  # noqa: F401
