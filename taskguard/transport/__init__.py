"""Transports: how a CheckTaskState request reaches the connector."""
