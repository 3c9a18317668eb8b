"""The scan's stateless path, beside the conversation engine (see run.py)."""
