"""The call lifecycle: the agent chain (:mod:`.chain`), running a call (:mod:`.run`), custom
chain factories (:mod:`.factories`), sessions, dialing, post-call work.

Import from the submodules: ``from nixflex_engine.calls.chain import CallContext``.
"""
