"""Triton kernels, each beside its plain-torch *_ref."""
