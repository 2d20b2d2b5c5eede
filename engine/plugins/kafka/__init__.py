"""The kafka plugin: each purge's aggregates as pmacct JSON messages into Kafka (confluent-kafka / librdkafka).

settings.py  kafka_config_file and the librdkafka configuration;
messages.py  rows -> JSON texts, topics, partition keys, multi-value packing (pure, vectorised);
writer.py    KafkaWriter: the producer, delivery accounting, outage handling.
"""
