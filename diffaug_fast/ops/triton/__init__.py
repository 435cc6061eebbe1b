"""Triton backend. On CPU it runs only under the interpreter (TRITON_INTERPRET=1)."""
