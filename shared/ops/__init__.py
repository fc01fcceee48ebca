"""Operator tools: the `broker` CLI, the embedded broker, fault injection and the benchmark."""
