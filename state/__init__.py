"""Per-item rolling feature state: plain, synchronous functions over numpy, no Kafka."""
