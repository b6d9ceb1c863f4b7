"""Kafka wiring: topics, codecs, the faust worker, dead letters, the replay producer."""
