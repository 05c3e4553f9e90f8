"""The Kafka consumer: images in, malignancy scores out, at least once."""
