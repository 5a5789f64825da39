"""Delivery of accepted messages (CONTRACT 6): the dispatcher that publishes and pushes them,
and the services behind $delivery-status, the pull, acknowledgements and replay."""
