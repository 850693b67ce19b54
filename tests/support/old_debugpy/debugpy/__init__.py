"""A stand-in for debugpy 1.8.6 (outside the supported range), found first on
the function's PYTHONPATH. The proxy must refuse it by its dist-info alone:
importing it fails the test."""

raise ImportError("lambda-debugger imported a debugpy it should have refused unread")
