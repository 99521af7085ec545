"""The io layer: files in and out, below every part (see docs/architecture.md).

Atomic writes, the one state-dict reader and loader, weights files and where they
come from, output refusal, and the tensor padding the bodies and the guide share.
"""
