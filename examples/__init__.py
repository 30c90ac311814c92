"""Examples for developers: custom processors, custom chains, tools, and running them on the
engine. Run each from the repository root, e.g. ``python -m examples.sandbox_call``; the test
suite runs them all (``tests/test_examples.py``)."""
