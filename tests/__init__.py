"""minivm's tests, and the helpers bench/ shares with them (importable as tests.*)."""
