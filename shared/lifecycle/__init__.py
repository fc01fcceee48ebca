"""The session lifecycle: phases, the one transition table, and the rules that use it."""

from shared.lifecycle.phases import (
    CLIENT_UPDATES,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    client_update,
    is_terminal,
    observe,
    transition,
)

__all__ = [
    "CLIENT_UPDATES",
    "TERMINAL",
    "TRANSITIONS",
    "IllegalTransition",
    "Phase",
    "client_update",
    "is_terminal",
    "observe",
    "transition",
]
