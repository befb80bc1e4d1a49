"""policyqa: answers questions about policy documents with cited source passages."""

__version__ = "0.1.0"
