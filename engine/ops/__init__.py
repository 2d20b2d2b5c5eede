"""Operations: merged loss accounting (stats_model), SIGUSR1 summary, `pmengine stats`, Prometheus."""
