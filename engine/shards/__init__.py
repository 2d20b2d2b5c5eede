"""Receiver shards: UDP socket → batch → decode → rings."""
