"""account-worker: consume account jobs from RabbitMQ and record them in PostgreSQL."""

__version__ = "1.0.0"
