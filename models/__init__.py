"""Forecasting models: plain numpy and torch, no Kafka. See `models.protocol`."""
