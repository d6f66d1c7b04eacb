"""edgeface: face recognition door access for the Raspberry Pi."""

__version__ = "0.1.0"
