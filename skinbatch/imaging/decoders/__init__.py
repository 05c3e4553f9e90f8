"""Decoder plugins, one module per container format, on a shared ``base`` (pydicom's layout)."""
