"""mqstream: streaming multi-horizon quantile forecasts over Kafka."""
